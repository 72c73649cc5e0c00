"""The hub's web server: the HTTP API, per-delivery acknowledgement links and a health check.

A link is opened by a person, and also by link-preview robots of chat apps and mail scanners,
so GET only shows a page with a button; only the POST from that button acknowledges.
Which links work, and what their page may say, is decided in ``hub.acklinks``; a client address
that keeps opening links that do not work gets 429 for a while (``GuessLimiter``).
The access log is off: URLs carry acknowledgement tokens.
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from hub.acklinks import GuessLimiter
from hub.actions import AlarmActions
from hub.api.app import create_api
from hub.api.context import ApiContext
from hub.database import AsyncStore
from hub.health import Health
from hub.models import CLOSED_STATES

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>Natalia</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 2em auto; font-size: 1.2em">
{content}
</body></html>"""


log = logging.getLogger(__name__)
T = TypeVar("T")


def _page(content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(content=content), status_code=status)


def _unknown() -> HTMLResponse:
    return _page("<p>This acknowledgement link is not valid (or no longer is).</p>", 404)


def _too_many(wait_s: float) -> HTMLResponse:
    minutes = max(1, math.ceil(wait_s / 60))
    page = _page(
        "<p>Too many links that do not work were opened from your network. Wait "
        f"{minutes} minute(s) and open your link again; if it still does not work, call HQ.</p>",
        429,
    )
    page.headers["Retry-After"] = str(math.ceil(wait_s))
    return page


def create_app(
    db: AsyncStore,
    actions: AlarmActions,
    on_change: Callable[[], None],
    health: Callable[[], Health],
    api: ApiContext,
    guesses: GuessLimiter | None = None,
) -> FastAPI:
    """The API (``/v1``), acknowledgement links (``/ack``) and ``/healthz`` on one server."""
    app = create_api(api)
    limiter = guesses or GuessLimiter(20, timedelta(minutes=10), actions.clock)

    async def open_link(request: Request, look_up: Callable[[str], T | None], token: str) -> T:
        """``look_up(token)`` on the database thread, unless the client is over its limit;
        a link that does not work counts against it."""
        address = request.client.host if request.client else "unknown"
        if wait := limiter.wait_s(address):
            raise _Refused(_too_many(wait))
        found = await db.run(look_up, token)
        if found is None:
            limiter.miss(address)
            if limiter.wait_s(address):
                log.warning("acknowledgement links: %s opened too many that do not work", address)
            raise _Refused(_unknown())
        return found

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused) -> HTMLResponse:
        return exc.page

    @app.get("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def confirm(request: Request, token: str) -> HTMLResponse:
        found = await open_link(request, actions.describe_token, token)
        recipient, ref = (html.escape(part) for part in found)
        return _page(
            f"<p>Alarm <b>{ref}</b> — {recipient}: tell HQ and the others that you are on it?</p>"
            f'<form method="post"><button type="submit" style="font-size: 1.2em">'
            f"I'm on it</button></form>"
        )

    @app.post("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def acknowledge(request: Request, token: str) -> HTMLResponse:
        found = await open_link(request, actions.acknowledge_token, token)
        ref, state = (html.escape(part) for part in found)
        if state in CLOSED_STATES:
            return _page(
                f"<p>Alarm <b>{ref}</b> is already closed ({state.replace('_', ' ')}). "
                "Thank you.</p>"
            )
        on_change()
        return _page(f"<p>Thank you. HQ knows you are on it (alarm <b>{ref}</b>).</p>")

    @app.get("/healthz", include_in_schema=False)  # for monitors, not API clients
    async def healthz() -> JSONResponse:
        """200 while the hub can do its job; 503 with the problems when it cannot."""
        state = health()
        return JSONResponse(state.as_json(), status_code=200 if state.ok else 503)

    return app


class _Refused(Exception):
    """Answer the request with ``page`` (a link that does not work, or too many of them)."""

    def __init__(self, page: HTMLResponse) -> None:
        super().__init__(page.status_code)
        self.page = page


class WebServer(uvicorn.Server):
    """uvicorn inside the hub's event loop. The hub, not uvicorn, handles SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: FastAPI, host: str, port: int) -> WebServer:
    config = uvicorn.Config(
        app, host=host, port=port, access_log=False, log_level="warning", lifespan="off"
    )
    return WebServer(config)
