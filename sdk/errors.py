"""Every error the SDK raises, in one place.

::

    NataliaError                    anything this SDK raises on purpose
    ├── APIError                    the hub answered with an error (RFC 9457 problem details)
    │   ├── InvalidRequestError         400: malformed request (e.g. a forged cursor)
    │   ├── AuthenticationError         401: no token, an unknown, expired or revoked one
    │   ├── PermissionDeniedError       403: the token's role does not allow this
    │   ├── NotFoundError               404: no such defender, alarm, ...
    │   ├── ConflictError               409: not in this state (e.g. resolving a resolved alarm)
    │   ├── UnprocessableEntityError    422: the hub refused the values (see ``errors``)
    │   ├── RateLimitError              429: slow down (see ``retry_after``)
    │   └── ServerError                 5xx: the hub failed; ``incident`` is in its log
    ├── TransportError              no answer: connection refused, reset, DNS, TLS...
    │   └── APITimeoutError             no answer in time (also a builtin ``TimeoutError``)
    └── UnexpectedResponseError     an answer this SDK cannot read (a proxy's page, a newer hub)

Invalid arguments are caught before any request: the client builds the API's input models
(``sdk.models``) first, so those raise :class:`pydantic.ValidationError`, not an ``APIError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = [
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "ConflictError",
    "FieldError",
    "InvalidRequestError",
    "NataliaError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "error_from_response",
]

#: How much of a non-problem error body is kept in the message (proxies answer with whole pages).
_EXCERPT = 200


class NataliaError(Exception):
    """Base class: ``except sdk.NataliaError`` catches everything the SDK raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One refused field of a 422: ``loc`` is its path, e.g. ``("body", "name")``."""

    loc: tuple[str | int, ...]
    msg: str
    type: str


class APIError(NataliaError):
    """The hub answered with an error status.

    ``code`` is stable and meant for programs (``"not_found"``, ``"bad_cursor"``...), ``detail``
    is for people; ``problem`` is the whole problem document (``None`` if the body was not one).
    """

    def __init__(
        self,
        status: int,
        *,
        code: str | None = None,
        detail: str = "",
        errors: tuple[FieldError, ...] = (),
        incident: str | None = None,
        problem: dict[str, Any] | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.incident = incident
        self.problem = problem
        self.method = method
        self.url = url
        super().__init__(self._message())

    def _message(self) -> str:
        # The path only: a query string may hold filters on people, and messages reach logs.
        what = f"{self.method} {urlsplit(self.url).path}: " if self.method else ""
        code = f" {self.code}" if self.code else ""
        text = f"{what}{self.status}{code}"
        if self.detail:
            text += f": {self.detail}"
        if self.incident:
            text += f" (incident {self.incident})"
        return text


class InvalidRequestError(APIError):
    """400: the request itself is malformed (for example a cursor this hub did not issue)."""


class AuthenticationError(APIError):
    """401: send a valid token (``natalia token create``); it may have expired or been revoked."""


class PermissionDeniedError(APIError):
    """403: the token's role lacks the permission ``detail`` names."""


class NotFoundError(APIError):
    """404: nothing with this id."""


class ConflictError(APIError):
    """409: the object is not in a state that allows this (e.g. the alarm is already closed)."""


class UnprocessableEntityError(APIError):
    """422: the hub refused the values; ``errors`` lists the fields when it can tell."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` (seconds) says when to try again, if known."""

    def __init__(self, status: int, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(status, **kwargs)


class ServerError(APIError):
    """5xx: the hub (or a proxy in front of it) failed; quote ``incident`` to its operators."""


class TransportError(NataliaError):
    """No answer from the hub: the cause (an ``httpx`` error) is ``__cause__``."""


class APITimeoutError(TransportError, TimeoutError):
    """The hub did not answer within the client's timeout."""


class UnexpectedResponseError(NataliaError):
    """The hub's answer is not what this SDK expects: not JSON, or not the documented shape.

    Usually a proxy's error page or a hub much newer than this SDK; ``status`` and an excerpt of
    the body help tell which.
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        self.status = status
        self.body = body[:_EXCERPT]
        super().__init__(message)


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_class(status: int) -> type[APIError]:
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, APIError)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP date) in seconds; ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _field_errors(raw: object) -> tuple[FieldError, ...]:
    if not isinstance(raw, list):
        return ()
    found = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("loc"), list):
            loc = tuple(p if isinstance(p, int) else str(p) for p in item["loc"])
            found.append(FieldError(loc, str(item.get("msg", "")), str(item.get("type", ""))))
    return tuple(found)


def error_from_response(response: httpx.Response) -> APIError:
    """The :class:`APIError` for an error response (its body must have been read)."""
    status = response.status_code
    problem = _problem(response)
    kwargs: dict[str, Any] = {"method": response.request.method, "url": str(response.request.url)}
    if problem is not None:
        code = problem.get("code")
        incident = problem.get("incident")
        kwargs.update(
            code=code if isinstance(code, str) else None,
            detail=str(problem.get("detail") or problem.get("title") or ""),
            errors=_field_errors(problem.get("errors")),
            incident=incident if isinstance(incident, str) else None,
            problem=problem,
        )
    else:
        text = " ".join(response.text.split())
        kwargs["detail"] = text[:_EXCERPT] or response.reason_phrase
    cls = error_class(status)
    if cls is RateLimitError:
        kwargs["retry_after"] = retry_after_seconds(response.headers.get("retry-after"))
    return cls(status, **kwargs)
