"""The live alarm-event stream: typed events that survive dropped connections.

A dropped connection, a hub restart or a gateway error is not the end of the stream: it
reconnects with ``Last-Event-ID`` so that no event is lost or repeated, waiting a little longer
after each failed try (never more than 30 s). It ends only when closed, or raises when the hub
refuses it (bad token, missing permission) or after ``max_reconnects`` failed tries in a row.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import anyio
import httpx

from sdk._async_transport import AsyncTransport
from sdk._base import RETRY_STATUSES, alarm_key, interrupt, query, stream_timeout
from sdk._sse import SSEDecoder, alarm_event, reconnect_delay
from sdk.errors import APIError, TransportError, UnexpectedResponseError, error_from_response
from sdk.models import AlarmEvent

log = logging.getLogger("sdk")

STREAM_PATH = "/alarm-events/stream"


class AsyncAlarmEventStream:
    """``async for event in stream`` yields :class:`sdk.models.AlarmEvent`; ``aclose()`` (or
    leaving ``async with``) ends it. ``last_event_id`` is where a new stream could resume."""

    def __init__(
        self,
        transport: AsyncTransport,
        *,
        after: int | None,
        alarm_id: int | str | None,
        max_reconnects: int | None,
        read_timeout: float,
    ) -> None:
        self._api = transport
        self._after = after
        self._alarm_id = alarm_key(alarm_id) if alarm_id is not None else None
        self._max_reconnects = max_reconnects
        self._timeout = stream_timeout(transport.settings.timeout, read_timeout)
        self._decoder = SSEDecoder(str(after) if after is not None else None)
        self._response: httpx.Response | None = None
        self._lines: AsyncIterator[str] | None = None
        self._failures = 0
        self._closed = False
        #: How many times the stream has connected (1 + the reconnections so far).
        self.connections = 0

    @property
    def last_event_id(self) -> str | None:
        return self._decoder.last_event_id

    @property
    def closed(self) -> bool:
        return self._closed or self._api.is_closed

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> AlarmEvent:
        while not self.closed:
            if self._lines is None:
                await self._connect()
                continue
            try:
                line = await anext(self._lines)
            except (StopAsyncIteration, httpx.RequestError, httpx.StreamError) as exc:
                await self._dropped(exc)
                continue
            event = self._decoder.feed(line)
            if event is not None:
                return alarm_event(event)
        await self._disconnect()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """End the stream, also when another thread or task is waiting for its next event."""
        self._closed = True
        if self._response is not None:
            interrupt(self._response)
        await self._disconnect()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _connect(self) -> None:
        if self.connections or self._failures:
            await anyio.sleep(reconnect_delay(self._failures, self._decoder.retry_ms))
            if self.closed:
                return
        try:
            response = await self._open()
        except UnexpectedResponseError:
            await self.aclose()
            raise
        except (TransportError, APIError) as exc:
            retryable = not isinstance(exc, APIError) or exc.status in RETRY_STATUSES
            self._failures += 1
            gave_up = self._max_reconnects is not None and self._failures > self._max_reconnects
            if not retryable or gave_up or self.closed:
                await self.aclose()
                raise
            log.warning("alarm-event stream: cannot connect (%s); trying again", exc)
            return
        self._failures = 0
        self.connections += 1
        self._response = response
        self._api.streaming.add(response)
        self._lines = response.aiter_lines()

    async def _open(self) -> httpx.Response:
        first = self.connections == 0
        params = query(alarm_id=self._alarm_id, after=self._after if first else None)
        headers = {"Accept": "text/event-stream"}
        if not first and self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        request = self._api.build(
            "GET", STREAM_PATH, params=params, headers=headers, timeout=self._timeout
        )
        response = await self._api.send(request, stream=True)
        if not response.is_success:
            await response.aread()
            await response.aclose()
            raise error_from_response(response)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aclose()
            raise UnexpectedResponseError(
                "the alarm-event stream answered without text/event-stream",
                status=response.status_code,
            )
        return response

    async def _dropped(self, exc: BaseException) -> None:
        await self._disconnect()
        if not self.closed:
            reason = "closed by the hub" if isinstance(exc, StopAsyncIteration) else repr(exc)
            log.info("alarm-event stream dropped (%s); reconnecting", reason)

    async def _disconnect(self) -> None:
        response, self._response, self._lines = self._response, None, None
        self._decoder.reset()
        if response is not None:
            self._api.streaming.discard(response)
            await response.aclose()
