"""The hub's web server: the HTTP API, per-delivery acknowledgement links and a health check.

A link is opened by a person, and also by link-preview robots of chat apps and mail scanners,
so GET only shows a page with a button; only the POST from that button acknowledges.
The access log is off: URLs carry acknowledgement tokens.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

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


def _page(content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(content=content), status_code=status)


UNKNOWN = _page("<p>This acknowledgement link is not valid (or no longer is).</p>", 404)


def create_app(
    db: AsyncStore,
    actions: AlarmActions,
    on_change: Callable[[], None],
    health: Callable[[], Health],
    api: ApiContext,
) -> FastAPI:
    """The API (``/v1``), acknowledgement links (``/ack``) and ``/healthz`` on one server."""
    app = create_api(api)

    @app.get("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def confirm(token: str) -> HTMLResponse:
        found = await db.run(actions.describe_token, token)
        if found is None:
            return UNKNOWN
        recipient, ref = (html.escape(part) for part in found)
        return _page(
            f"<p>Alarm <b>{ref}</b> — {recipient}: tell HQ and the others that you are on it?</p>"
            f'<form method="post"><button type="submit" style="font-size: 1.2em">'
            f"I'm on it</button></form>"
        )

    @app.post("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def acknowledge(token: str) -> HTMLResponse:
        found = await db.run(actions.acknowledge_token, token)
        if found is None:
            return UNKNOWN
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
