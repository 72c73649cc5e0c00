"""Ends what a token holds open once the token no longer allows it.

A request is checked once, when it arrives; a live stream stays open for days. So every open
stream registers its principal here, and one task reads all their tokens every ``interval``
seconds (one query for every stream): a token revoked, expired, deleted, or whose role changed,
sets its streams' ``ended`` event and they close. The client then reconnects and gets a 401.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from hub.api.tokens import ApiToken, Principal, still_valid

log = logging.getLogger(__name__)


class TokenWatch:
    """Shared by every stream of one API application (see ``hub.api.routes.stream``)."""

    def __init__(self, engine: Engine, interval: float) -> None:
        self.engine = engine
        self.interval = interval
        self._watched: dict[asyncio.Event, Principal] = {}
        self._task: asyncio.Task[None] | None = None

    @contextmanager
    def watch(self, principal: Principal) -> Iterator[asyncio.Event]:
        """An event set once ``principal``'s token stops being valid as it was."""
        ended = asyncio.Event()
        self._watched[ended] = principal
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="api-token-watch")
        try:
            yield ended
        finally:
            self._watched.pop(ended, None)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._watched:
            await asyncio.sleep(self.interval)
            watched = dict(self._watched)
            ids = {principal.token_id for principal in watched.values()}
            try:
                rows = await loop.run_in_executor(None, functools.partial(self._read, ids))
            except SQLAlchemyError as exc:  # keep the streams; try again next round
                log.error("token watch: cannot read tokens (%s)", type(exc).__name__)
                continue
            now = datetime.now(UTC)
            for ended, principal in watched.items():
                if not still_valid(rows.get(principal.token_id), principal, now):
                    ended.set()

    def _read(self, ids: set[int]) -> dict[int, ApiToken]:
        with Session(self.engine) as session:
            rows = session.exec(select(ApiToken).where(col(ApiToken.id).in_(ids))).all()
            return {row.id: row for row in rows if row.id is not None}
