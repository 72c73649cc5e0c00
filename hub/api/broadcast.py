"""One poller for every live stream of alarm events (``GET /v1/alarm-events/stream``).

Alarm events are rows written by many parts of the hub and by other processes (the CLI, another
hub on the same PostgreSQL), so the table itself is the source: one task reads the new rows every
``poll_s`` on a worker thread with its own session, formats each once as a server-sent-event
frame, and keeps the latest frames in a bounded buffer. A hundred listeners cost one query per
poll and never block the event loop. A listener that falls behind the buffer (slow client, or a
resume from an old ``Last-Event-ID``) reads what it missed with its own catch-up queries instead
of the buffer growing without bound; its socket's flow control holds it back meanwhile.

Rows go out in id order without gaps or duplicates (``hub.tail`` explains the ordering); a
listener's position is the id of the last event it was sent, which is also the SSE ``id:``.

A listener outside HQ is never sent an event for HQ only (``hub.disclosure``): for it such an
event is as if it did not exist — no frame, and the keepalive comes when it would have come
without it, so not even the timing of what it is sent tells that something happened. Its frames
carry the ids ``hub.outside_ids`` shows outside HQ, in ``id:`` and in ``data``, so the events it
is not sent leave no gaps in the numbers either; its position stays a row id, inside the hub.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, func, select

from hub.api.views import alarm_event_view, outside_event_view
from hub.disclosure import shown_outside
from hub.models import AlarmEvent
from hub.outside_ids import Ids, outside_ids
from hub.tail import Settler
from sdk.models import AlarmEvent as AlarmEventModel

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

KEEPALIVE = b": keepalive\n\n"
#: Rows per query, for the poll and for each catch-up.
BATCH = 500


@dataclass(frozen=True)
class Frame:
    id: int
    alarm_id: int
    data: bytes  #: the whole SSE event: ``id:``, ``event:``, ``data:`` and the blank line
    #: The same for listeners outside HQ (roles, not people); None: for HQ only.
    outside: bytes | None


def frame(row: AlarmEvent, ids: Ids) -> Frame:
    """``row`` framed for HQ and, unless it is for HQ only, for those outside HQ, whose frame
    shows its id as ``ids`` (the events' permutation) does."""
    view = alarm_event_view(row)
    outside = None if row.hq_only else _sse(outside_event_view(row, ids))
    return Frame(view.id, view.alarm_id, _sse(view), outside)


def _sse(view: AlarmEventModel) -> bytes:
    kind = " ".join(view.kind.split())  # one line, whatever a writer put in it
    return f"id: {view.id}\nevent: {kind}\ndata: {view.model_dump_json()}\n\n".encode()


def latest_event_id(session: Session, outside: bool = False) -> int:
    """The newest alarm event's id (0 when there is none): a stream from "now" starts here.

    ``outside``: the newest a listener outside HQ may see. Its stream starts there, since where
    a stream starts is the id of its opening block: an event for HQ only after the last one an
    outsider was shown would otherwise be seen as a new id with nothing sent for it.
    """
    if not outside:
        return int(session.exec(select(func.max(col(AlarmEvent.id)))).one() or 0)
    query = select(AlarmEvent.id).where(shown_outside(AlarmEvent))
    return int(session.exec(query.order_by(col(AlarmEvent.id).desc()).limit(1)).first() or 0)


class Broadcaster:
    """Shared by every stream of one API application (see ``hub.api.routes.stream``)."""

    def __init__(self, engine: Engine, poll_s: float, buffer_size: int = 2000) -> None:
        self.engine = engine
        self.poll_s = poll_s
        self.closed = False
        #: Every event with ``id <= head`` has been read (or its hole stepped over).
        self.head: int | None = None
        #: ``buffer`` holds every event with ``floor < id <= head``.
        self._floor = 0
        self._buffer: deque[Frame] = deque(maxlen=buffer_size)
        self._settler = Settler()
        self._changed = asyncio.Event()
        self._starting = asyncio.Lock()
        self._listeners = 0
        self._poller: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="natalia-stream")

    async def listen(
        self, after: int, alarm_id: int | None, keepalive_s: float, outside: bool = False
    ) -> AsyncGenerator[bytes, None]:
        """Frames of the events after ``after`` (of one alarm, or all), then new ones as they
        come; a keepalive comment whenever nothing was sent for ``keepalive_s``. Ends when
        the broadcaster is closed. ``outside``: the frames that name roles, not people."""
        loop = asyncio.get_running_loop()
        self._listeners += 1
        try:
            async with self._starting:  # the first listener reads where "now" is; not all
                if self.head is None and not self.closed:
                    self.head = self._floor = await self._run(self._latest)
            self._poll_while_listened()
            position = after
            sent_at = loop.time()
            while not self.closed:
                changed = self._changed
                assert self.head is not None
                if position < self.head:
                    frames, position = await self._after(position, alarm_id)
                    chunks = [f.outside if outside else f.data for f in frames]
                    for chunk in [chunk for chunk in chunks if chunk is not None]:
                        yield chunk
                        sent_at = loop.time()
                    continue
                try:  # asyncio.timeout: wait_for (3.11) can swallow a disconnect's cancellation
                    async with asyncio.timeout_at(sent_at + keepalive_s):
                        await changed.wait()
                except TimeoutError:
                    yield KEEPALIVE
                    sent_at = loop.time()
        finally:
            self._listeners -= 1

    def close(self) -> None:
        """End every stream (the server is shutting down: its connections must finish)."""
        self.closed = True
        self._notify()
        if self._poller is not None:
            self._poller.cancel()
        self._executor.shutdown(wait=False)  # queries under way finish on their own

    async def _after(self, position: int, alarm_id: int | None) -> tuple[list[Frame], int]:
        """The events after ``position`` up to ``head``, from the buffer or from the database."""
        head = self.head
        assert head is not None
        if position >= self._floor:
            found = [f for f in self._buffer if f.id > position]
            position = head
        else:
            found = await self._run(self._catch_up, position, head, alarm_id)
            position = found[-1].id if len(found) >= BATCH else head
        return [f for f in found if alarm_id is None or f.alarm_id == alarm_id], position

    def _poll_while_listened(self) -> None:
        if self.closed:
            return
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="alarm-event-stream")

    async def _poll(self) -> None:
        failing = False
        while self._listeners and not self.closed:
            assert self.head is not None
            more = False
            try:
                frames, more = await self._run(self._read_new, self.head)
            except SQLAlchemyError as exc:
                if not failing:  # once per outage, not every poll
                    log.error("live stream: cannot read alarm events (%s)", type(exc).__name__)
                failing = True
            else:
                if failing:
                    log.info("live stream: reading alarm events again")
                failing = False
                if frames:
                    self._append(frames)
            await asyncio.sleep(0 if more else self.poll_s)

    def _append(self, frames: list[Frame]) -> None:
        for found in frames:
            if len(self._buffer) == self._buffer.maxlen:
                self._floor = self._buffer[0].id
            self._buffer.append(found)
        self.head = frames[-1].id
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _read_new(self, head: int) -> tuple[list[Frame], bool]:
        """The settled events after ``head``, and whether more are waiting."""
        ids = outside_ids(self.engine).events
        with Session(self.engine) as session:
            rows = session.exec(
                select(AlarmEvent)
                .where(col(AlarmEvent.id) > head)
                .order_by(col(AlarmEvent.id))
                .limit(BATCH)
            ).all()
            settled = self._settler.settle(head, [row.id for row in rows if row.id is not None])
            return [frame(row, ids) for row in rows[:settled]], settled == BATCH

    def _latest(self) -> int:
        with Session(self.engine) as session:
            return latest_event_id(session)

    def _catch_up(self, position: int, head: int, alarm_id: int | None) -> list[Frame]:
        query = select(AlarmEvent).where(col(AlarmEvent.id) > position, col(AlarmEvent.id) <= head)
        if alarm_id is not None:
            query = query.where(AlarmEvent.alarm_pk == alarm_id)
        ids = outside_ids(self.engine).events
        with Session(self.engine) as session:
            rows = session.exec(query.order_by(col(AlarmEvent.id)).limit(BATCH)).all()
            return [frame(row, ids) for row in rows]

    async def _run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(function, *args, **kwargs)
        )
