"""What the fund refuses, each mapped to one HTTP status by the API (``hub.api.routes.fund``)."""

from __future__ import annotations


class FundError(Exception):
    """Something the fund refuses; the message says what and what to do instead."""


class FundNotFound(FundError, LookupError):
    """No request with that id (HTTP 404)."""


class FundInvalid(FundError, ValueError):
    """The request refers to something that does not exist or does not fit (HTTP 422)."""


class FundConflict(FundError):
    """Not possible in the request's current state (HTTP 409); ``code`` says which rule."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
