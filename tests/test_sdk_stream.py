"""``stream_alarm_events()`` against a small real SSE server that drops connections on cue.

The hub's own stream is exercised in tests/test_sdk_alarms.py; here the server is scripted so
that drops, refusals and half-sent events happen exactly when a test needs them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from sdk import (
    AlarmEventStream,
    AsyncClient,
    AuthenticationError,
    Client,
    ServerError,
    UnexpectedResponseError,
)
from sdk.models import AlarmEvent

HOLD = b"<hold>"  # keep the connection open until the test ends


def event(event_id: int, kind: str = "received", alarm_id: int = 12) -> bytes:
    data = {
        "id": event_id,
        "alarm_id": alarm_id,
        "alarm_ref": f"A{alarm_id}",
        "at": "2025-05-01T10:00:00Z",
        "kind": kind,
        "actor": "hub",
    }
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class SSEServer:
    """Connection ``n`` gets ``script[n]``: a status and body chunks, ending in a dropped
    connection unless the last chunk is ``HOLD``."""

    script: list[tuple[int, list[bytes]]]
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self
        self.stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                server.seen.append(Seen(url.path, parse_qs(url.query), dict(self.headers)))
                status, chunks = server.script[min(len(server.seen), len(server.script)) - 1]
                self.send_response(status)
                kind = "text/event-stream" if status == 200 else "application/problem+json"
                self.send_header("Content-Type", kind)
                self.end_headers()
                for chunk in chunks:
                    if chunk == HOLD:
                        server.stopping.wait(30)
                        return
                    self.wfile.write(chunk)
                    self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def sse() -> Iterator[list[SSEServer]]:
    servers: list[SSEServer] = []
    yield servers
    for server in servers:
        server.close()


def serve(servers: list[SSEServer], *script: tuple[int, list[bytes]]) -> SSEServer:
    servers.append(SSEServer(list(script)))
    return servers[-1]


def take(stream: AlarmEventStream, count: int) -> list[AlarmEvent]:
    return [next(stream) for _ in range(count)]


# The first connection sends a retry hint, a keepalive and event 1, then starts event 2 and
# drops; the second resends event 2 (the client must not have kept the half) and event 3.
DROP_MID_EVENT = (
    (200, [b"retry: 10\n\n: keepalive\n\n", event(1), event(2, "notified")[:40]]),
    (200, [event(2, "notified"), b": keepalive\n\n", event(3, "acknowledged"), HOLD]),
)


def test_the_stream_reconnects_with_last_event_id_after_a_drop(sse: list[SSEServer]) -> None:
    server = serve(sse, *DROP_MID_EVENT)
    with Client(server.url, "nat_token") as client:
        with client.stream_alarm_events(alarm_id="A12") as stream:
            events = take(stream, 3)
            assert stream.connections == 2 and stream.last_event_id == "3"
        assert list(stream) == []
    assert [(e.id, e.kind, e.alarm_ref) for e in events] == [
        (1, "received", "A12"),
        (2, "notified", "A12"),
        (3, "acknowledged", "A12"),
    ]
    assert all(isinstance(e, AlarmEvent) for e in events)
    first, second = server.seen
    assert first.path == second.path == "/v1/alarm-events/stream"
    assert first.query == second.query == {"alarm_id": ["12"]}
    assert "Last-Event-ID" not in first.headers and second.headers["Last-Event-ID"] == "1"
    assert second.headers["Accept"] == "text/event-stream"
    assert second.headers["Authorization"] == "Bearer nat_token"


def test_the_async_stream_starts_after_the_given_event_and_resumes(sse: list[SSEServer]) -> None:
    server = serve(sse, (200, [b"retry: 10\n\n", event(6)]), (200, [event(7), HOLD]))

    async def main() -> list[AlarmEvent]:
        async with (
            AsyncClient(server.url, "nat_token") as client,
            client.stream_alarm_events(after=5) as stream,
        ):
            return [await anext(stream), await anext(stream)]

    assert [e.id for e in anyio.run(main)] == [6, 7]
    first, second = server.seen
    assert first.query == {"after": ["5"]} and "Last-Event-ID" not in first.headers
    assert second.query == {} and second.headers["Last-Event-ID"] == "6"


def test_a_resumed_stream_that_saw_nothing_resumes_where_it_was_asked_to(
    sse: list[SSEServer],
) -> None:
    server = serve(sse, (200, [b"retry: 10\n: keepalive\n\n"]), (200, [event(9), HOLD]))
    with Client(server.url, "nat_token") as client:
        stream = client.stream_alarm_events(after=8)
        assert next(stream).id == 9
        stream.close()
    assert server.seen[1].headers["Last-Event-ID"] == "8"


def test_a_refused_stream_raises_at_once(sse: list[SSEServer]) -> None:
    problem = json.dumps({"status": 401, "code": "unauthenticated", "detail": "bad token"})
    server = serve(sse, (401, [problem.encode()]))
    with Client(server.url, "nat_bad") as client:
        stream = client.stream_alarm_events()
        with pytest.raises(AuthenticationError, match="bad token"):
            next(stream)
        assert stream.closed and list(stream) == []
    assert len(server.seen) == 1


def test_a_hub_that_is_restarting_is_tried_again(sse: list[SSEServer]) -> None:
    server = serve(sse, (503, [b'{"code": "unavailable"}']), (200, [b"retry: 10\n\n", event(4)]))
    with Client(server.url, "nat_token") as client:
        stream = client.stream_alarm_events()
        assert next(stream).id == 4
        stream.close()
    assert len(server.seen) == 2


def test_max_reconnects_bounds_the_failed_tries_in_a_row(sse: list[SSEServer]) -> None:
    server = serve(sse, (503, [b'{"code": "unavailable", "detail": "shutting down"}']))
    with Client(server.url, "nat_token") as client:
        stream = client.stream_alarm_events(max_reconnects=0)
        with pytest.raises(ServerError, match="shutting down"):
            next(stream)
    assert len(server.seen) == 1


def test_closing_the_client_ends_the_stream_cleanly(sse: list[SSEServer]) -> None:
    server = serve(sse, (200, [event(1), event(2), HOLD]))
    got = []
    with Client(server.url, "nat_token") as client:
        for alarm_event in client.stream_alarm_events():
            got.append(alarm_event.id)
            client.close()
    assert got == [1] and len(server.seen) == 1


def test_closing_an_async_stream_from_another_task_ends_its_iteration(
    sse: list[SSEServer],
) -> None:
    server = serve(sse, (200, [event(1), HOLD]))
    got: list[int] = []

    async def main() -> None:
        async with AsyncClient(server.url, "nat_token") as client:
            stream = client.stream_alarm_events()
            first = anyio.Event()

            async def consume() -> None:
                async for alarm_event in stream:
                    got.append(alarm_event.id)
                    first.set()

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(consume)
                    await first.wait()
                    await stream.aclose()

    anyio.run(main)
    assert got == [1]


def test_an_event_that_is_not_an_alarm_event_is_an_unexpected_response(
    sse: list[SSEServer],
) -> None:
    server = serve(sse, (200, [b'id: 1\ndata: {"hello": "world"}\n\n', event(2), HOLD]))
    with Client(server.url, "nat_token") as client:
        stream = client.stream_alarm_events()
        with pytest.raises(UnexpectedResponseError, match="not an AlarmEvent"):
            next(stream)
        assert next(stream).id == 2
        stream.close()
    assert len(server.seen) == 1


@pytest.mark.parametrize("close", ["stream", "client"])
def test_closing_from_another_thread_wakes_a_waiting_reader(
    sse: list[SSEServer], close: str
) -> None:
    server = serve(sse, (200, [event(1), HOLD]))
    got: list[int | str] = []
    first = threading.Event()
    with Client(server.url, "nat_token") as client:
        stream = client.stream_alarm_events()

        def consume() -> None:
            for alarm_event in stream:
                got.append(alarm_event.id)
                first.set()
            got.append("ended")

        reader = threading.Thread(target=consume)
        reader.start()
        assert first.wait(10)
        if close == "stream":
            stream.close()
        else:
            client.close()
        reader.join(10)  # the server holds the connection for 30 s: only the close ends it
    assert got == [1, "ended"] and len(server.seen) == 1
