"""One module per resource; each exposes ``router``. ``ROUTERS`` is what ``create_api`` mounts."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.routes import defenders, tokens

ROUTERS: list[APIRouter] = [tokens.router, defenders.router]
