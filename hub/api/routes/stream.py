"""``GET /v1/alarm-events/stream``: the alarms' timeline, live, as server-sent events.

Every alarm event (received, notified, delivered, acknowledged, verified, resolved...), whoever
wrote it — this hub, another hub on the same database, the CLI — arrives as::

    id: 1234
    event: acknowledged
    data: {"id": 1234, "alarm_id": 12, "alarm_ref": "A12", "at": "...", "kind": "acknowledged", ...}

``data`` is an ``AlarmEvent`` (``sdk.models``). The stream starts with a ``retry:`` hint and
sends ``: keepalive`` comments while nothing happens, so proxies keep it open.

The stream ends within ``token_check_s`` (2 s) when its token is revoked, expires or changes
role (``hub.api.token_watch``); reconnecting then gets a 401.

Where it starts: after the ``Last-Event-ID`` header (what a browser's ``EventSource`` sends when
it reconnects), else after ``?after=<id>``, else at "now" (only new events). A resumed stream
has no gaps and no duplicates. ``?alarm_id=`` follows one alarm.

Callers outside HQ (without ``contacts:read``) get the event ids ``hub.outside_ids`` shows them,
in ``id:`` lines and in ``data``, and their ``Last-Event-ID`` and ``?after=`` are mapped back;
their "now" is the last event they may see, so the opening block's id is never one they were
not shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from hub.api.broadcast import Broadcaster, latest_event_id
from hub.api.context import ApiContext
from hub.api.errors import ApiError, NotFound, Problem
from hub.api.routes._common import AlarmReader, Context, DbSession
from hub.api.token_watch import TokenWatch
from hub.api.tokens import Principal
from hub.api.visibility import event_ids_for, event_position, knows_recipients
from hub.models import Alarm
from sdk.models import MAX_ID

router = APIRouter(tags=["alarms"])

#: The stream's last words when its token no longer allows it (a comment: clients ignore it).
TOKEN_ENDED = b": this token was revoked, expired or changed; the stream ends\n\n"

#: How long a disconnected client waits before it reconnects (the SSE ``retry:`` field).
RETRY_MS = 3000

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events, one per alarm event (`data`: an AlarmEvent).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    400: {"model": Problem, "description": "Last-Event-ID is not an event id"},
    404: {"model": Problem, "description": "No such alarm"},
    503: {"model": Problem, "description": "The hub is shutting down"},
}


class BadLastEventId(ApiError):
    status = 400
    code = "bad_last_event_id"


class ShuttingDown(ApiError):
    status = 503
    code = "unavailable"


@router.get(
    "/alarm-events/stream",
    response_class=StreamingResponse,
    responses=_STREAM_DOC,
    summary="Alarm events, live (server-sent events)",
)
async def stream(
    request: Request,
    session: DbSession,
    principal: AlarmReader,
    context: Context,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, description="Start after this event id (see Last-Event-ID)."),
    ] = None,
    alarm_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only this alarm's events.")
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(max_length=40, description="Sent by EventSource on reconnect; wins over after."),
    ] = None,
) -> StreamingResponse:
    resume = _resume_point(last_event_id, after)
    # The request's session (the one the token was checked with) closes now: a stream may stay
    # open for days, and must not hold a pooled connection or an SQLite read snapshot.
    start = await run_in_threadpool(_start_position, session, principal, resume, alarm_id)
    broadcaster = _broadcaster(request.app, context)
    watch = _token_watch(request.app, context)
    return StreamingResponse(
        _events(broadcaster, watch, principal, start, alarm_id, context.stream_keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def close_streams(app: object) -> None:
    """End every open stream of ``app`` and refuse new ones: called when the hub stops, since
    the web server waits for open responses to finish before it exits."""
    if not isinstance(app, Starlette):
        return
    app.state.alarm_streams_closed = True
    broadcaster: Broadcaster | None = getattr(app.state, "alarm_stream", None)
    if broadcaster is not None:
        broadcaster.close()
    watch: TokenWatch | None = getattr(app.state, "token_watch", None)
    if watch is not None:
        watch.close()


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is None or not last_event_id.strip():
        return after
    value = last_event_id.strip()
    if not value.isascii() or not value.isdigit() or int(value) > MAX_ID:
        raise BadLastEventId("Last-Event-ID must be the id of an event this stream sent")
    return int(value)


@dataclass(frozen=True)
class Start:
    """Where a stream starts: after the event ``row_id``, shown to its caller as ``shown``."""

    row_id: int
    shown: int


def _start_position(
    session: Session, principal: Principal, resume: int | None, alarm_id: int | None
) -> Start:
    try:
        if alarm_id is not None and session.get(Alarm, alarm_id) is None:
            raise NotFound(f"no alarm {alarm_id}")
        if resume is not None:
            position = event_position(principal, session, resume)
            if position is None:
                raise BadLastEventId(
                    f"{resume} is not the id of an event this stream sent; reconnect without "
                    "Last-Event-ID and after to start from now"
                )
            return Start(position, resume)
        latest = latest_event_id(session, outside=not knows_recipients(principal))
        return Start(latest, event_ids_for(principal, session).shown(latest))
    finally:
        session.close()


def _broadcaster(app: FastAPI, context: ApiContext) -> Broadcaster:
    if getattr(app.state, "alarm_streams_closed", False):
        raise ShuttingDown("the hub is shutting down; reconnect in a moment")
    found: Broadcaster | None = getattr(app.state, "alarm_stream", None)
    if found is None:
        found = Broadcaster(context.engine, context.stream_poll_s)
        app.state.alarm_stream = found
    return found


def _token_watch(app: FastAPI, context: ApiContext) -> TokenWatch:
    found: TokenWatch | None = getattr(app.state, "token_watch", None)
    if found is None:
        found = TokenWatch(context.engine, context.token_check_s)
        app.state.token_watch = found
    return found


async def _events(
    broadcaster: Broadcaster,
    watch: TokenWatch,
    principal: Principal,
    start: Start,
    alarm_id: int | None,
    keepalive_s: float,
) -> AsyncIterator[bytes]:
    # The opening block carries the start position as its id: a client that loses the
    # connection before the first event resumes from here, not from a new "now" (no gap).
    yield f"retry: {RETRY_MS}\nid: {start.shown}\n: alarm events after {start.shown}\n\n".encode()
    outside = not knows_recipients(principal)
    frames = broadcaster.listen(start.row_id, alarm_id, keepalive_s, outside)
    step: asyncio.Future[bytes] | None = None
    with watch.watch(principal) as ended:
        token_ended = asyncio.ensure_future(ended.wait())
        try:
            while True:
                step = asyncio.ensure_future(anext(frames))
                await asyncio.wait({step, token_ended}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    yield TOKEN_ENDED
                    return
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            token_ended.cancel()
            if step is not None and not step.done():
                step.cancel()  # and wait for it: the generator must stop before aclose
                await asyncio.wait({step})
            await frames.aclose()
