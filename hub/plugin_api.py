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
from collections.abc import Awaitable, Callable, Collection, Mapping
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


class MaskingNotifier(Notifier, Protocol):
    """A notifier that also knows which parts of its URLs are secret or name someone.

    ``mask`` is optional: without it the hub shows only the scheme and a server host.
    """

    def mask(self, url: str) -> str:
        """``url`` safe to show and to log: every secret and identity replaced by ``***``."""
        ...


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


#: How each scheme's URLs are masked, from the notifiers that know (``Notifier.mask``); filled
#: by ``hub.plugin_manager.NotifierRegistry`` when it is built.
_MASKERS: dict[str, Callable[[str], str]] = {}
#: A host that names a server (a dotted name or an IP literal), which a masked URL may show; a
#: host without a dot is, for many services, a token, a topic or a phone number.
_SERVER_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)(:\d{1,5})?$")


def register_masker(scheme: str, masker: Callable[[str], str]) -> None:
    """Mask ``scheme``'s URLs with ``masker`` (a notifier's own knowledge of its URL format)."""
    _MASKERS[scheme.lower()] = masker


def mask_url(url: str) -> str:
    """The URL with everything that may be a secret or an identity replaced by ``***``.

    The notifier that handles the scheme decides (``Notifier.mask``); otherwise only the scheme
    and a server host stay: user names, passwords, tokens, topics, e-mail addresses, phone
    numbers, paths and queries never show. Safe to log and to show in HQ's tables:
    ``json://***@hooks.example.org/***``, ``tgram://***``.
    """
    try:
        scheme = url_scheme(url)
    except InvalidChannelURL:
        return "***"
    masker = _MASKERS.get(scheme)
    if masker is not None:
        try:
            return masker(url)
        except Exception:  # a plugin's bug must not put a secret on screen
            return f"{scheme}://***"
    return mask_generic(url)


def mask_generic(url: str, *, host_is_server: bool = True) -> str:
    """``scheme://`` and, when ``host_is_server`` and it looks like one, the server's host
    (with ``***@`` before it when the URL had credentials, ``/***`` after it when it had more);
    nothing else of ``url``."""
    try:
        scheme = url_scheme(url)
        parts = urlsplit(url)
    except (InvalidChannelURL, ValueError):
        return "***"
    _, at, host = parts.netloc.rpartition("@")
    if not host_is_server or not _SERVER_HOST.match(host):
        return f"{scheme}://***" if (parts.netloc or parts.path or parts.query) else f"{scheme}://"
    rest = parts.path.strip("/") or parts.query or parts.fragment
    return f"{scheme}://{'***@' if at else ''}{host}{'/***' if rest else ''}"
