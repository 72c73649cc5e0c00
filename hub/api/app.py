"""The hub's HTTP API under ``/v1``: routers, error shape, OpenAPI.

``create_api`` builds a FastAPI application with every API route; the hub's web server adds its
acknowledgement links and health check to the same application (``hub.web``).
"""

from __future__ import annotations

from fastapi import FastAPI

from hub.api import errors
from hub.api.context import ApiContext
from hub.api.routes import ROUTERS

API_PREFIX = "/v1"

DESCRIPTION = """\
The Natalia hub's API: defenders and their wristbands, contacts and responders, escalation
policies, alarms with their timeline and HQ actions, deliveries, a live stream of alarm events,
signed webhooks, the emergency fund and Defenders' Days.

Authenticate with an API token: `Authorization: Bearer nat_...` (`natalia token create`).
Errors are RFC 9457 problem details (`application/problem+json`); lists are paginated with
`limit` and `cursor`. See hub/api/README.md.
"""


def create_api(context: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Natalia hub API",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.api = context
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX, responses=errors.PROBLEM_RESPONSES)
    return app
