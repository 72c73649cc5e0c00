"""How the SDK talks HTTP, against real local servers: timeouts, transport errors, opt-in
retries of idempotent calls only, ``Retry-After``, and answers that are not what it expects."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from broker.launcher import free_port
from sdk import (
    DEFAULT_TIMEOUT,
    APITimeoutError,
    Client,
    NataliaError,
    RateLimitError,
    Retries,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)
from tests.support.receivers import HTTPReceiver, wait_until

ME = json.dumps({"token_id": 1, "name": "ci", "role": "admin", "permissions": []}).encode()
POLICY = json.dumps({"name": "calm", "document": {"stages": []}}).encode()
DEFENDER = json.dumps(
    {
        "id": 7,
        "name": "Ana",
        "language": "en",
        "timezone": "UTC",
        "allow_public_broadcast": False,
        "created_at": "2025-01-01T00:00:00Z",
    }
).encode()
FAST = Retries(attempts=2, backoff=0.01, max_backoff=0.02)


class SilentServer:
    """Accepts TCP connections and never answers: a hub that hangs."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._markers = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def connections_so_far(self) -> int:
        """Every client connection made before this call, counted for sure: the server accepts
        connections in order, so once a marker connection is accepted all earlier ones are."""
        marker = socket.create_connection(("127.0.0.1", self.port))
        self._markers += 1
        try:
            wait_until(lambda: marker.getsockname() in [_peer(c) for c in list(self.accepted)])
        finally:
            marker.close()
        return len(self.accepted) - self._markers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._socket.close()
        for connection in self.accepted:
            connection.close()


def _peer(connection: socket.socket) -> Any:
    try:
        return connection.getpeername()
    except OSError:
        return None


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


Answer = tuple[int, dict[str, str], bytes]


class HeaderServer:
    """Answers from a script of (status, headers, body), recording each request's method."""

    def __init__(self, answers: list[Answer]) -> None:
        self.methods: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                server.methods.append(self.command)
                status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


Scripted = Callable[[list[Answer]], HeaderServer]


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    made: list[HeaderServer] = []

    def start(answers: list[Answer]) -> HeaderServer:
        made.append(HeaderServer(answers))
        return made[-1]

    yield start
    for server in made:
        server.close()


# -- timeouts and transport errors -----------------------------------------------------------


def test_a_hub_that_never_answers_is_a_timeout_error(silent: SilentServer) -> None:
    with (
        Client(silent.url, "nat_token", timeout=0.2) as client,
        pytest.raises(APITimeoutError) as caught,
    ):
        client.me()
    error = caught.value
    assert isinstance(error, TransportError) and isinstance(error, TimeoutError)
    assert isinstance(error, NataliaError) and isinstance(error.__cause__, httpx.ReadTimeout)
    assert "GET /v1/me" in str(error)


def test_every_request_carries_the_ten_second_default_timeout(
    http_receiver: HTTPReceiver,
) -> None:
    http_receiver.default = (200, ME)
    seen: list[dict[str, float]] = []
    hooks = {"request": [lambda request: seen.append(request.extensions["timeout"])]}
    with (
        httpx.Client(timeout=300, event_hooks=hooks) as own,
        Client(http_receiver.base_url, "nat_token", http_client=own) as client,
    ):
        client.me()
    assert DEFAULT_TIMEOUT == 10.0
    assert seen == [{"connect": 10.0, "read": 10.0, "write": 10.0, "pool": 10.0}]


def test_a_refused_connection_is_a_transport_error_without_the_token() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", "nat_secret-token") as client,
        pytest.raises(TransportError) as caught,
    ):
        client.defenders.get(1)
    assert not isinstance(caught.value, APITimeoutError)
    assert "GET /v1/defenders/1" in str(caught.value) and "secret" not in str(caught.value)
    assert "secret" not in repr(client)


# -- retries -------------------------------------------------------------------------------------


def test_retries_are_off_by_default(http_receiver: HTTPReceiver) -> None:
    http_receiver.responses = [(503, b'{"code": "unavailable"}'), (200, ME)]
    with Client(http_receiver.base_url, "nat_token") as client, pytest.raises(ServerError):
        client.me()
    assert len(http_receiver.requests) == 1


def test_an_idempotent_call_is_retried_after_a_503(http_receiver: HTTPReceiver) -> None:
    http_receiver.responses = [(503, b'{"code": "unavailable"}'), (200, ME)]
    with Client(http_receiver.base_url, "nat_token", retries=FAST) as client:
        assert client.me().name == "ci"
    assert [r.method for r in http_receiver.requests] == ["GET", "GET"]


def test_a_put_is_retried_after_a_502_and_a_504(http_receiver: HTTPReceiver) -> None:
    http_receiver.responses = [(502, b"bad gateway"), (504, b"gateway timeout"), (200, POLICY)]
    with Client(http_receiver.base_url, "nat_token", retries=FAST) as client:
        assert client.policies.put("calm", {"stages": []}).name == "calm"
    assert [r.method for r in http_receiver.requests] == ["PUT"] * 3
    assert json.loads(http_receiver.requests[-1].body) == {"document": {"stages": []}}


def test_a_post_is_never_retried(http_receiver: HTTPReceiver) -> None:
    http_receiver.responses = [(503, b'{"code": "unavailable"}'), (201, DEFENDER)]
    with (
        Client(http_receiver.base_url, "nat_token", retries=5) as client,
        pytest.raises(ServerError) as caught,
    ):
        client.defenders.create(name="Ana")
    assert caught.value.status == 503 and len(http_receiver.requests) == 1


def test_retries_stop_after_the_last_attempt(http_receiver: HTTPReceiver) -> None:
    http_receiver.default = (503, b'{"code": "unavailable", "detail": "restarting"}')
    with (
        Client(http_receiver.base_url, "nat_token", retries=FAST) as client,
        pytest.raises(ServerError, match="restarting"),
    ):
        client.me()
    assert len(http_receiver.requests) == 1 + FAST.attempts


def test_other_errors_are_not_retried(http_receiver: HTTPReceiver) -> None:
    http_receiver.responses = [(500, b'{"code": "internal_error", "incident": "abc123"}')]
    with (
        Client(http_receiver.base_url, "nat_token", retries=FAST) as client,
        pytest.raises(ServerError) as caught,
    ):
        client.me()
    assert caught.value.incident == "abc123" and "incident abc123" in str(caught.value)
    assert len(http_receiver.requests) == 1


def test_timeouts_are_retried_for_idempotent_calls_only(silent: SilentServer) -> None:
    with Client(silent.url, "nat_token", timeout=0.2, retries=FAST) as client:
        with pytest.raises(APITimeoutError):
            client.me()
        assert silent.connections_so_far() == 3
        with pytest.raises(APITimeoutError):
            client.defenders.create(name="Ana")
        assert silent.connections_so_far() == 4


def test_retry_after_is_honoured(scripted: Scripted) -> None:
    server = scripted([(429, {"Retry-After": "0"}, b"{}"), (200, {}, ME)])
    # Without the header the backoff would be an hour: the test would time out.
    with Client(server.url, "nat_token", retries=Retries(attempts=1, backoff=3600)) as client:
        assert client.me().name == "ci"
    assert server.methods == ["GET", "GET"]


def test_a_long_retry_after_is_not_waited_for_but_reported(scripted: Scripted) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    server = scripted([(429, {"Retry-After": later}, b'{"code": "rate_limited"}')])
    with (
        Client(server.url, "nat_token", retries=FAST) as client,
        pytest.raises(RateLimitError) as caught,
    ):
        client.me()
    assert server.methods == ["GET"]
    assert caught.value.retry_after is not None and 7000 < caught.value.retry_after <= 7200


# -- answers the SDK cannot read -------------------------------------------------------------


def test_an_error_page_that_is_not_a_problem_keeps_its_text(scripted: Scripted) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1>\n nginx</body></html>"
    server = scripted([(502, {"Content-Type": "text/html"}, page)])
    with Client(server.url, "nat_token") as client, pytest.raises(ServerError) as caught:
        client.me()
    error = caught.value
    assert error.status == 502 and error.code is None and error.problem is None
    assert "502 Bad Gateway" in error.detail and "\n" not in error.detail


def test_a_success_that_is_not_json_is_an_unexpected_response(http_receiver: HTTPReceiver) -> None:
    http_receiver.default = (200, b"<html>captive portal</html>")
    with (
        Client(http_receiver.base_url, "nat_token") as client,
        pytest.raises(UnexpectedResponseError, match="not JSON") as caught,
    ):
        client.me()
    assert caught.value.status == 200 and "captive portal" in caught.value.body


def test_json_of_the_wrong_shape_is_an_unexpected_response(http_receiver: HTTPReceiver) -> None:
    http_receiver.default = (200, b'{"items": "none"}')
    with Client(http_receiver.base_url, "nat_token") as client:
        with pytest.raises(UnexpectedResponseError):
            client.defenders.list()
        http_receiver.default = (200, b'{"id": "seven"}')
        with pytest.raises(UnexpectedResponseError, match="documented shape"):
            client.defenders.get(7)


# -- what goes out ---------------------------------------------------------------------------


def test_requests_carry_the_token_and_a_user_agent(http_receiver: HTTPReceiver) -> None:
    http_receiver.default = (200, ME)
    with Client(http_receiver.base_url + "/v1/", " nat_token \n", user_agent="dash/2") as client:
        client.me()
    [request] = http_receiver.requests
    assert request.path == "/v1/me"
    assert request.headers["Authorization"] == "Bearer nat_token"
    assert request.headers["User-Agent"] == "dash/2"


def test_a_client_passed_in_is_used_and_left_open(http_receiver: HTTPReceiver) -> None:
    http_receiver.default = (200, ME)
    own = httpx.Client(headers={"X-Trace": "t1"})
    with Client(http_receiver.base_url, "nat_token", http_client=own) as client:
        client.me()
    assert not own.is_closed and client.is_closed
    assert http_receiver.requests[0].headers["X-Trace"] == "t1"
    own.close()
