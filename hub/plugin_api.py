"""The API a notifier plugin is written against: everything a partner NGO needs to import.

A plugin is a module or object with ``@hookimpl`` functions (see ``hub.hookspecs``). The one hook
that matters today, ``natalia_notifiers``, returns :class:`Notifier` objects; the hub picks the
notifier for each recipient by the scheme of the recipient's channel URL and awaits its
``send()`` with a timeout. ``plugins/README.md`` is the guide; ``plugins/console.py`` the shortest
complete example.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import pluggy

PROJECT = "natalia"
hookimpl = pluggy.HookimplMarker(PROJECT)


class PluginError(RuntimeError):
    """A plugin is misconfigured or two plugins claim the same channel scheme."""


class InvalidChannelURL(ValueError):
    """A channel URL a notifier cannot use; the message says what is wrong and never the secret."""


@dataclass(frozen=True)
class Notification:
    """One rendered message for one recipient on one channel.

    ``url`` carries the channel's credentials: never log it, use :func:`mask_url`.
    """

    delivery_id: int
    url: str
    recipient: str
    language: str
    title: str
    body: str
    short: str
    alarm_ref: str
    is_test: bool = False
    #: How long the hub waits for ``send()`` (``[delivery] timeout_s``), None outside the hub:
    #: keep the channel's own connect and read timeouts within it, or the hub gives up first,
    #: counts a failure and sends again while the first send may still arrive.
    timeout_s: float | None = None


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one send. ``detail`` is shown to HQ: an error text or the provider's id.

    ``permanent`` marks failures a retry cannot fix (malformed URL, rejected credentials, a 4xx).
    """

    ok: bool
    detail: str = ""
    permanent: bool = False

    @classmethod
    def success(cls, detail: str = "") -> DeliveryResult:
        return cls(ok=True, detail=detail)

    @classmethod
    def failure(cls, detail: str, *, permanent: bool = False) -> DeliveryResult:
        return cls(ok=False, detail=detail, permanent=permanent)


@runtime_checkable
class Notifier(Protocol):
    """Sends notifications for the channel URL schemes it names.

    ``send`` may be ``async def`` (preferred) or a plain function, which the hub runs in a worker
    thread. It reports failure as a :class:`DeliveryResult`; an exception is recorded as a failure
    too, but costs a traceback in the log.
    """

    name: str

    @property
    def schemes(self) -> Collection[str]: ...

    def validate(self, url: str) -> None:
        """Raise :class:`InvalidChannelURL` if ``url`` cannot work (checked when saved)."""

    def send(self, notification: Notification) -> Awaitable[DeliveryResult] | DeliveryResult: ...


class BaseNotifier(ABC):
    """Convenience base: a fixed ``schemes`` tuple, URL scheme check, ``async send``."""

    name: str = ""
    scheme_names: tuple[str, ...] = ()

    @property
    def schemes(self) -> Collection[str]:
        return self.scheme_names

    def validate(self, url: str) -> None:
        scheme = url_scheme(url)
        if scheme not in self.schemes:
            raise InvalidChannelURL(f"{self.name} cannot send to {scheme}:// URLs")

    @abstractmethod
    async def send(self, notification: Notification) -> DeliveryResult: ...


def settings_table(
    settings: Mapping[str, Any], plugin: str, known: Collection[str]
) -> Mapping[str, Any]:
    """The ``[plugins.<plugin>]`` table; a key it does not know is a configuration error."""
    table: Mapping[str, Any] = settings.get(plugin, {})
    unknown = set(table) - set(known)
    if unknown:
        raise PluginError(
            f"unknown [plugins.{plugin}] setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    return table


def seconds_setting(table: Mapping[str, Any], plugin: str, key: str, default: float) -> float:
    """A positive number of seconds from a plugin's settings table (booleans are refused)."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise PluginError(f"[plugins.{plugin}] {key} must be a number of seconds above 0")
    return float(value)


def url_scheme(url: str) -> str:
    """The lower-cased scheme of a channel URL (``mailto`` of ``mailto://...``)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if not match:
        raise InvalidChannelURL("a channel URL must look like scheme://..., e.g. mailto://...")
    return match.group(1).lower()


_SECRET_QUERY = re.compile(
    r"(?i)((?:token|key|secret|password|pass|pwd|apikey|api_key|access_token|auth)[^=&]*=)[^&]*"
)


def mask_url(url: str) -> str:
    """The URL with user info, passwords and token-like query values replaced by ``***``.

    Safe to log and to show in HQ's tables: ``tgram://***@/12345``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    path = re.sub(r"[A-Za-z0-9_\-:]{20,}", "***", parts.path)
    if parts.scheme in ("tgram",) or re.fullmatch(r"\d+:[A-Za-z0-9_-]+", netloc):
        netloc = "***"
    masked = f"{parts.scheme}://{netloc}{path}"
    return masked + (f"?{query}" if query else "")
