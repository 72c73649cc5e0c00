"""One error shape for the whole API: RFC 9457 problem details (``application/problem+json``).

    {"type": "https://natalia.example/problems/not-found", "title": "Not found", "status": 404,
     "code": "not_found", "detail": "no defender 12", "errors": []}

``code`` is stable and meant for programs; ``detail`` is for people. ``errors`` lists the fields
of a 422 (``loc``, ``msg``, ``type``). A 500 says only that something failed and gives an
``incident`` id that is also in the hub's log.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://natalia.example/problems/"
MEDIA_TYPE = "application/problem+json"

#: status -> (code, title) for problems raised without a more specific code.
_STANDARD = {
    400: ("bad_request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not allowed for this token's role"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("too_large", "Request too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_failed", "The request is not valid"),
    429: ("rate_limited", "Too many requests"),
    500: ("internal_error", "Internal error"),
    503: ("unavailable", "Service unavailable"),
}


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """The body of every error response."""

    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    errors: list[FieldError] = Field(default_factory=list)
    incident: str | None = None


class ApiError(Exception):
    """Raise from a route: becomes a problem response with ``status`` and ``code``."""

    status = 400
    code = "bad_request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Invalid(ApiError):
    """A well-formed request that the hub cannot carry out as asked (422)."""

    status = 422
    code = "validation_failed"


def problem(
    status: int,
    detail: str = "",
    *,
    code: str | None = None,
    errors: list[FieldError] | None = None,
    incident: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    default_code, title = _STANDARD.get(status, ("error", "Error"))
    code = code or default_code
    body = Problem(
        type=PROBLEM_BASE + code.replace("_", "-"),
        title=title,
        status=status,
        code=code,
        detail=detail,
        errors=errors or [],
        incident=incident,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    found = []
    for error in exc.errors():
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        found.append(FieldError(loc=loc, msg=str(error.get("msg", "")), type=error["type"]))
    return found


def install(app: FastAPI) -> None:
    """Route every error through :func:`problem`."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.detail, code=exc.code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        where = ", ".join(".".join(str(p) for p in e.loc) for e in errors[:5])
        return problem(422, f"invalid fields: {where}" if where else "", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else ""
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, detail, headers=headers)

    @app.exception_handler(DataError)
    async def unstorable(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value that passed validation (out of its range, a character it
        # cannot store): the request's fault, and nothing was written.
        log.warning("API %s %s: the database refused a value", request.method, request.url.path)
        return problem(422, "a value in this request cannot be stored", code="unstorable_value")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        # The path only (no query string: it may hold filters on people); the traceback has the
        # rest. Secrets never reach this line: tokens live in headers, bodies are not logged.
        log.error(
            "API incident %s: %s %s failed (%s)",
            incident,
            request.method,
            request.url.path,
            type(exc).__name__,
            exc_info=exc,
        )
        return problem(500, "the hub could not complete this request", incident=incident)


#: For ``responses=`` in route declarations, so the OpenAPI document shows the error shape.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": _STANDARD[status][1]} for status in (401, 403, 422)
}
