"""Local stand-ins for a mail server and a partner's webhook, so the demo sends real e-mail
(SMTP to aiosmtpd) and real HTTP (json:// to a local server) without the internet."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class MailCatcher:
    """An SMTP server on loopback that keeps each message's envelope and subject."""

    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        self.port = port
        self.received: list[tuple[list[str], str]] = []
        self._controller = Controller(self, hostname="127.0.0.1", port=port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes, policy

        message = message_from_bytes(envelope.content, policy=policy.default)
        self.received.append((list(envelope.rcpt_tos), str(message["Subject"])))
        return "250 OK"

    def mailto(self, to: str) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=alarms@natalia.example&to={to}"

    def start(self) -> MailCatcher:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class WebhookCatcher:
    """An HTTP server on loopback that keeps the JSON bodies posted to it, and when each came
    (``arrived[i]`` is the ``time.time()`` of ``received[i]``)."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        arrived: list[float] = []
        self.received = received
        self.arrived = arrived
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with lock:
                    received.append(body)
                    arrived.append(time.time())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def json_url(self, path: str = "alerts") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def start(self) -> WebhookCatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
