"""The hub's HTTP API under ``/v1``: routers, error shape, OpenAPI.

``create_api`` builds a FastAPI application with every API route; the hub's web server adds its
acknowledgement links and health check to the same application (``hub.web``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from hub.api import docs, errors
from hub.api.context import ApiContext
from hub.api.headers import SecurityHeaders
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


def create_api(context: ApiContext | None) -> FastAPI:
    """The API application; ``context`` None builds it only for its OpenAPI document."""
    app = FastAPI(
        title="Natalia hub API",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: hub.api.docs instead
        redoc_url=None,
    )
    if context is not None:
        app.state.api = context
    errors.install(app)

    app.add_middleware(SecurityHeaders)
    docs.install(app, f"{API_PREFIX}/docs", f"{API_PREFIX}/openapi.json")

    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX, responses=errors.PROBLEM_RESPONSES)
    _document_problems(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Every error response in the OpenAPI document is what the hub sends: a ``Problem`` as
    ``application/problem+json`` (FastAPI would say ``application/json``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
            for operations in document["paths"].values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        if status[:1] in ("4", "5"):
                            response["content"] = {errors.MEDIA_TYPE: problem}
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]
