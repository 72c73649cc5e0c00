"""How every call reaches the hub: one ``httpx`` client, the token, the timeout, opt-in retries.

Resources (``client.defenders``...) describe *what* to ask; this module decides *how*: it builds
the request, retries idempotent ones when allowed, and turns failures into ``sdk.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import anyio
import httpx
from pydantic import BaseModel

from sdk._base import RETRY_STATUSES, QueryValue, Settings, interrupt
from sdk._parse import parse, parse_list, parse_page
from sdk.errors import APITimeoutError, TransportError, error_from_response
from sdk.models import Page

M = TypeVar("M", bound=BaseModel)
Params = Mapping[str, QueryValue]

log = logging.getLogger("sdk")


class AsyncTransport:
    """Owns the ``httpx`` client unless the caller passed one in (then the caller closes it)."""

    def __init__(self, settings: Settings, http_client: httpx.AsyncClient | None) -> None:
        self.settings = settings
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._owns_http = http_client is None
        self._closed = False
        #: Responses being streamed, to interrupt when the client closes.
        self.streaming: set[httpx.Response] = set()

    @property
    def is_closed(self) -> bool:
        return self._closed or self._http.is_closed

    async def aclose(self) -> None:
        self._closed = True
        for response in list(self.streaming):
            interrupt(response)
        if self._owns_http:
            await self._http.aclose()

    def build(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        return self._http.build_request(
            method,
            self.settings.api_url + path,
            params=params,
            json=json,
            headers={**self.settings.headers, **(headers or {})},
            timeout=timeout or self.settings.timeout,
        )

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """One try; ``httpx`` errors become :class:`TransportError` / :class:`APITimeoutError`."""
        try:
            return await self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise APITimeoutError(
                f"{request.method} {request.url.path}: no answer in time ({type(exc).__name__})"
            ) from exc
        except httpx.RequestError as exc:
            raise TransportError(
                f"{request.method} {request.url.path}: {type(exc).__name__}: {exc}"
            ) from exc

    async def request(
        self, method: str, path: str, *, params: Params | None = None, json: Any = None
    ) -> httpx.Response:
        """A successful (2xx) response, read; retried as ``settings.retries`` allows."""
        request = self.build(method, path, params=params, json=json)
        retries = self.settings.retries
        retrying = retries.applies_to(method)
        attempt = 0
        while True:
            try:
                response = await self.send(request)
            except TransportError as exc:
                wait = retries.delay(attempt) if retrying and not self.is_closed else None
                if wait is None:
                    raise
                reason = type(exc.__cause__).__name__
            else:
                if response.is_success:
                    return response
                status = response.status_code
                wait = None
                if retrying and status in RETRY_STATUSES:
                    wait = retries.delay(attempt, response.headers.get("retry-after"))
                if wait is None:
                    raise error_from_response(response)
                reason = str(status)
            attempt += 1
            log.warning(
                "%s %s failed (%s); retry %d of %d in %.1f s",
                method,
                request.url.path,
                reason,
                attempt,
                retries.attempts,
                wait,
            )
            await anyio.sleep(wait)

    async def fetch(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        params: Params | None = None,
        json: Any = None,
    ) -> M:
        return parse(await self.request(method, path, params=params, json=json), model)

    async def fetch_list(self, path: str, model: type[M]) -> list[M]:
        return parse_list(await self.request("GET", path), model)

    async def fetch_page(self, path: str, model: type[M], params: Params) -> Page[M]:
        return parse_page(await self.request("GET", path, params=params), model)

    async def paginate(self, path: str, model: type[M], params: Params) -> AsyncIterator[M]:
        """Every item of a list endpoint, fetching the next page only when it is needed."""
        params = dict(params)
        while True:
            page = await self.fetch_page(path, model, params)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            params["cursor"] = page.next_cursor

    async def no_content(self, method: str, path: str, *, json: Any = None) -> None:
        await self.request(method, path, json=json)


class AsyncResource:
    """A group of endpoints (``client.defenders``, ``client.alarms``...) sharing the transport."""

    def __init__(self, transport: AsyncTransport) -> None:
        self._api = transport
