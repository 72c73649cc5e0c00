"""Security headers on every answer of the hub's web server: API, acknowledgement pages, docs.

- ``Content-Security-Policy``: nothing loads from anywhere unless a page says so; no page may be
  framed (``frame-ancestors 'none'``), forms post only back to the hub. A page that needs more
  (the API docs: the hub's own scripts) sets its own policy, which is kept.
- ``X-Frame-Options: DENY`` for browsers without ``frame-ancestors``.
- ``X-Content-Type-Options: nosniff``: a JSON answer is never run as a script.
- ``Referrer-Policy: no-referrer``: an acknowledgement link carries its token in the path, and a
  link followed from the page must not hand it to another site.

A plain ASGI middleware, so streamed answers (the live event stream) pass through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The policy of every answer that does not set its own: inline ``style`` attributes only (the
#: acknowledgement pages), no scripts, no frames, forms to the hub itself.
DEFAULT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", DEFAULT_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),  # answers hold personal data, tokens, passwords
)


class SecurityHeaders:
    """Adds each of :data:`SECURITY_HEADERS` that an answer does not set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [pair for pair in SECURITY_HEADERS if pair[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
