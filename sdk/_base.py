"""What ``Client`` and ``AsyncClient`` share: settings, the retry rule, request shaping.

Nothing here does I/O, so the two clients differ only in how they wait; keeping every decision
here (and in ``_parse`` and ``_sse``) keeps the hand-written async client, and the sync one
generated from it, short.
"""

from __future__ import annotations

import contextlib
import enum
import os
import random
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from sdk._version import __version__
from sdk.errors import retry_after_seconds

DEFAULT_TIMEOUT = 10.0
API_PREFIX = "/v1"
#: Only these are retried: repeating them cannot do something twice.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Answers worth another try: busy (429) and a gateway or the hub briefly down (502-504).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_USER_AGENT = f"natalia-sdk-python/{__version__} httpx/{httpx.__version__}"


@dataclass(frozen=True)
class Retries:
    """Opt-in retries of idempotent requests (GET, HEAD, PUT, DELETE; never POST or PATCH).

    A request is retried up to ``attempts`` more times after a transport error or a 429, 502, 503
    or 504, waiting an exponential backoff with jitter (``backoff`` doubling up to
    ``max_backoff`` seconds), or the server's ``Retry-After`` when it sends one. A
    ``Retry-After`` longer than ``max_retry_after`` is not waited for: the error is raised, and
    :class:`sdk.errors.RateLimitError` carries ``retry_after`` for the caller to decide.
    """

    attempts: int = 2
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retry attempts and delays cannot be negative")

    @classmethod
    def of(cls, value: int | Retries) -> Retries:
        """``retries=3`` is ``Retries(attempts=3)``; ``0`` turns retries off."""
        if isinstance(value, Retries):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("retries must be an int or sdk.Retries")
        return cls(attempts=value)

    def applies_to(self, method: str) -> bool:
        return self.attempts > 0 and method.upper() in IDEMPOTENT_METHODS

    def delay(self, attempt: int, retry_after: str | None = None) -> float | None:
        """Seconds to wait before retry ``attempt + 1`` (``attempt`` counts from 0), or ``None``
        when there is no retry left or the server asks for a longer wait than we accept."""
        if attempt >= self.attempts:
            return None
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            return asked if asked <= self.max_retry_after else None
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Settings:
    """A client's fixed settings; the token lives only in ``headers`` and never in a repr."""

    api_url: str
    headers: Mapping[str, str]
    timeout: httpx.Timeout
    retries: Retries

    @classmethod
    def build(
        cls,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout | None,
        retries: int | Retries,
        user_agent: str | None,
    ) -> Settings:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token is empty: pass an API token (natalia token create)")
        headers = {
            "Authorization": f"Bearer {token.strip()}",
            "Accept": "application/json",
            "User-Agent": user_agent or DEFAULT_USER_AGENT,
        }
        return cls(api_url(base_url), headers, httpx.Timeout(timeout), Retries.of(retries))

    def __repr__(self) -> str:
        return f"Settings(api_url={self.api_url!r}, retries={self.retries!r})"


def api_url(base_url: str) -> str:
    """``https://hub.example.org`` or ``.../v1`` -> ``https://hub.example.org/v1``."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"base_url must be an http(s) URL such as https://hub.example.org, got {base_url!r}"
        )
    text = str(url.copy_with(query=None, fragment=None)).rstrip("/")
    return text if text.endswith(API_PREFIX) else text + API_PREFIX


def stream_timeout(timeout: httpx.Timeout, read: float) -> httpx.Timeout:
    """The client's timeout, except for reads: a stream is quiet between events by design."""
    return httpx.Timeout(connect=timeout.connect, read=read, write=timeout.write, pool=timeout.pool)


def interrupt(response: httpx.Response) -> None:
    """Wake whoever is blocked reading ``response`` (a stream closed from another thread).

    Closing a socket does not wake a thread blocked in ``recv``; shutting it down does, and the
    reader sees the end of the stream.
    """
    network = response.extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def from_environment(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``NATALIA_URL`` and ``NATALIA_TOKEN``, for ``Client.from_env()``."""
    environ = os.environ if environ is None else environ
    url, token = environ.get("NATALIA_URL", ""), environ.get("NATALIA_TOKEN", "")
    if not url:
        raise ValueError(
            "NATALIA_URL is not set: export the hub's URL, e.g. https://hub.example.org"
        )
    if not token:
        raise ValueError("NATALIA_TOKEN is not set: export an API token (natalia token create)")
    return url, token


# -- request shaping -----------------------------------------------------------------------------


def alarm_key(alarm: int | str) -> int:
    """An alarm's id from ``12`` or its reference ``"A12"`` (what HQ staff say and type)."""
    if isinstance(alarm, int) and not isinstance(alarm, bool):
        return alarm
    if isinstance(alarm, str):
        text = alarm.strip()
        digits = text[1:] if text[:1] in ("A", "a") else text
        if digits.isascii() and digits.isdigit():
            return int(digits)
    raise ValueError(f'an alarm is its id (12) or its reference ("A12"), not {alarm!r}')


def path(*parts: int | str) -> str:
    """``path("defenders", 12, "codes")`` is ``/defenders/12/codes``; names are percent-encoded,
    so an id such as ``"../tokens"`` stays one segment."""
    found = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, int | str):
            raise TypeError(f"a path segment is an id or a name, not {part!r}")
        found.append("/" + quote(str(part), safe=""))
    return "".join(found)


QueryValue = str | list[str]


def query(**values: object) -> dict[str, QueryValue]:
    """Query parameters without the ``None`` ones; a list repeats its parameter (``?a=1&a=2``)."""
    found: dict[str, QueryValue] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, Iterable) and not isinstance(value, str | bytes):
            found[name] = [_scalar(item) for item in value]
        else:
            found[name] = _scalar(value)
    return found


def _scalar(value: object) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


class NotGiven:
    """The default of the few arguments where ``None`` means something: "remove it"."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = NotGiven()


def given(**values: object) -> dict[str, Any]:
    """The arguments a caller actually passed: ``None`` means "the hub's default" or "unchanged"."""
    return {name: value for name, value in values.items() if value is not None}


def payload(model: BaseModel) -> dict[str, Any]:
    """An input model as JSON, with only the fields that were set (the hub fills in defaults)."""
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_unset=True)
    return dumped
