"""Answers into models: anything that is not the documented JSON is an ``UnexpectedResponseError``
(a proxy's error page, a captive portal, a hub much newer than this SDK), never a bare
``KeyError`` or ``pydantic.ValidationError`` from deep inside the client."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from sdk.errors import UnexpectedResponseError
from sdk.models import Page

M = TypeVar("M", bound=BaseModel)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UnexpectedResponseError(
            f"{response.request.method} {response.request.url.path}: the answer is not JSON",
            status=response.status_code,
            body=response.text,
        ) from None


def _unexpected(response: httpx.Response, exc: Exception) -> UnexpectedResponseError:
    return UnexpectedResponseError(
        f"{response.request.method} {response.request.url.path}: the answer does not have the "
        f"documented shape ({exc})",
        status=response.status_code,
        body=response.text,
    )


def parse(response: httpx.Response, model: type[M]) -> M:
    try:
        return model.model_validate(_json(response))
    except PydanticValidationError as exc:
        raise _unexpected(response, exc) from None


def parse_list(response: httpx.Response, model: type[M]) -> list[M]:
    data = _json(response)
    try:
        if not isinstance(data, list):
            raise TypeError("expected a JSON array")
        return [model.model_validate(item) for item in data]
    except (PydanticValidationError, TypeError) as exc:
        raise _unexpected(response, exc) from None


def parse_page(response: httpx.Response, model: type[M]) -> Page[M]:
    data = _json(response)
    try:
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            raise TypeError('expected {"items": [...], "next_cursor": ...}')
        items = [model.model_validate(item) for item in data["items"]]
        cursor = data.get("next_cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise TypeError("next_cursor is not a string")
    except (PydanticValidationError, TypeError) as exc:
        raise _unexpected(response, exc) from None
    return Page(items=items, next_cursor=cursor)
