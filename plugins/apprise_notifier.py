"""Every Apprise service as one notifier: e-mail, SMS gateways, Telegram, X, Signal, Matrix, ntfy...

Apprise is built for "send this to my list of URLs"; an alarm hub needs each delivery isolated,
bounded in time and explained. So each send here:

- loads a NEW Apprise service object from the URL: Apprise throttles per instance
  (``request_rate_per_sec``, seconds for e-mail and ntfy), so a shared object would queue one
  alarm behind another. The fresh instance's rate is also set to 0, so a URL with several targets
  is not slowed down between them;
- disables Apprise's own per-service deadline (``AppriseAsset(service_timeout=0)``): with a
  deadline, Apprise hands every call to one process-wide pool of ``min(32, CPUs + 4)`` threads,
  where concurrent alarms would wait for each other. Instead the call runs in this notifier's own
  thread pool and its sockets get the connect and read timeouts the operator set: ``cto``/``rto``
  in the channel's URL, else ``[plugins.apprise] timeout`` — never Apprise's own 4 s default —
  and never more than the hub waits for the send (``Notification.timeout_s``, from
  ``[delivery] timeout_s``), so the hub never gives up on a send that is still under way;
- reads the reason for a failure from the ``AppriseResult`` of that very call (Apprise captures
  each service's log records per call through context variables), so concurrent sends never see
  each other's error text — unlike a global ``apprise.LogCapture``;
- masks, in that text, every part of the URL that Apprise's privacy form hides;
- classifies the failure: Apprise returns only a bool, but its failure lines for HTTP services
  carry the status (``...Not Found., error=404.``). A failure whose every line names a 4xx
  status other than 408, 425 and 429 is permanent (the hub moves to the recipient's next
  channel at once); 5xx, 408/425/429, connection errors and anything unrecognised are
  transient (the hub retries the same channel with backoff).

Apprise's own log records (INFO names every e-mail recipient, DEBUG dumps payloads with the
alarm's coordinates) are kept out of the hub's logs: the ``apprise`` logger is pinned to WARNING
(needed for the per-call capture), does not propagate, and has only a ``NullHandler``.

Settings (``[plugins.apprise]``): ``timeout`` (seconds, default 10), ``max_workers`` (concurrent
sends, default 64), ``exclude_schemes`` (Apprise schemes to leave to another plugin).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import apprise
from apprise.manager_plugins import NotificationManager

from hub.plugin_api import (
    DeliveryResult,
    InvalidChannelURL,
    Notification,
    Notifier,
    PluginError,
    hookimpl,
    mask_generic,
    seconds_setting,
    settings_table,
    url_scheme,
)
from plugins.console import CONSOLE_SCHEMES
from plugins.facebook import FACEBOOK_SCHEMES
from plugins.redaction import redact, secret_fragments, url_fragments

APPRISE_LOGGER = "apprise"
#: The level the ``apprise`` logger must have: WARNING records carry the reason of a failure,
#: INFO and below carry recipients' addresses and message bodies.
APPRISE_LOG_LEVEL = logging.WARNING
#: Schemes another built-in plugin handles; Apprise must not claim them too.
CLAIMED_BY_OTHER_BUILTINS = frozenset(CONSOLE_SCHEMES) | frozenset(FACEBOOK_SCHEMES)
#: Services whose body limit is below this get ``Notification.short`` (SMS, X, pagers).
SHORT_BODY_LIMIT = 500
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_WORKERS = 64
MAX_DETAIL_LENGTH = 1000
SETTINGS_KEYS = frozenset({"timeout", "max_workers", "exclude_schemes"})
URL_LIST = "https://github.com/caronc/apprise/wiki#notification-services"
#: The HTTP status in Apprise's failure lines: ``Failed to send ...: Not Found., error=404.``
HTTP_STATUS = re.compile(r"\berror=(\d{3})\b")
#: Client errors a later retry can fix: timeout, too early, too many requests.
RETRYABLE_4XX = frozenset({408, 425, 429})

#: Apprise's plugin registry (a process-wide singleton), untyped upstream.
_MANAGER: Any = cast(Any, NotificationManager)()


@dataclass(frozen=True)
class AppriseSettings:
    """The ``[plugins.apprise]`` table, checked once at start-up."""

    timeout: float = DEFAULT_TIMEOUT
    max_workers: int = DEFAULT_MAX_WORKERS
    exclude_schemes: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AppriseSettings:
        table = settings_table(settings, "apprise", SETTINGS_KEYS)
        timeout = seconds_setting(table, "apprise", "timeout", DEFAULT_TIMEOUT)
        workers = table.get("max_workers", DEFAULT_MAX_WORKERS)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise PluginError("[plugins.apprise] max_workers must be a whole number above 0")
        excluded = table.get("exclude_schemes", [])
        if isinstance(excluded, str) or not all(isinstance(s, str) for s in excluded):
            raise PluginError('[plugins.apprise] exclude_schemes must be a list like ["signal"]')
        return cls(timeout, workers, frozenset(s.lower() for s in excluded))


def apprise_schemes(exclude: Collection[str] = ()) -> frozenset[str]:
    """Every scheme Apprise knows, including services whose Python package is missing here.

    Those are claimed too, so that :meth:`AppriseNotifier.validate` can say which package to
    install instead of "no plugin handles this scheme".
    """
    known = {scheme.lower() for scheme in _MANAGER.schemas(include_disabled=True)}
    return frozenset(known - CLAIMED_BY_OTHER_BUILTINS - set(exclude))


def contain_apprise_logging() -> None:
    """Keep Apprise's records out of the hub's logs while still capturing their reasons.

    Idempotent; applied at construction and before every send, so a logging configuration
    loaded later (``dictConfig`` and friends) cannot re-open the leak or blind the capture.
    """
    log = logging.getLogger(APPRISE_LOGGER)
    log.setLevel(APPRISE_LOG_LEVEL)
    log.propagate = False
    log.disabled = False
    if not any(isinstance(handler, logging.NullHandler) for handler in log.handlers):
        log.addHandler(logging.NullHandler())


class _ThisThreadRecords(logging.Handler):
    """Apprise's WARNING+ messages emitted by the current thread, while loading one URL.

    Loading happens before Apprise's own per-call capture exists; filtering on the thread keeps
    a concurrent validation's messages out.
    """

    def __init__(self) -> None:
        super().__init__(APPRISE_LOG_LEVEL)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            try:
                self.messages.append(record.getMessage())
            except Exception:
                return  # a malformed record must not break a delivery


@contextmanager
def _records_of_this_thread() -> Iterator[_ThisThreadRecords]:
    handler = _ThisThreadRecords()
    log = logging.getLogger(APPRISE_LOGGER)
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def new_asset() -> apprise.AppriseAsset:
    """Apprise settings for one delivery: no Apprise-side deadline (see module docstring)."""
    return apprise.AppriseAsset(service_timeout=0, secure_logging=True)


def load_service(url: str, asset: apprise.AppriseAsset) -> Any:
    """A fresh Apprise service object for ``url``; :class:`InvalidChannelURL` saying why not.

    Messages never quote the URL: Apprise's own texts are redacted with every URL fragment.
    """
    scheme = url_scheme(url)
    if scheme not in _MANAGER:
        raise InvalidChannelURL(
            f"Apprise has no {scheme}:// service; see the supported URLs at {URL_LIST}"
        )
    plugin = _MANAGER[scheme]
    if not plugin.enabled:
        needs = _requirements(plugin)
        raise InvalidChannelURL(
            f"the Apprise {plugin.service_name} service ({scheme}://) cannot run on this hub"
            f"{': ' + needs if needs else ''}; install what it needs or use another channel"
        )
    with _records_of_this_thread() as records:
        try:
            service = apprise.Apprise.instantiate(url, asset=asset, suppress_exceptions=False)
            reason = "; ".join(dict.fromkeys(records.messages))
        except Exception as exc:
            service, reason = None, str(exc) or type(exc).__name__
    if service is None:
        raise InvalidChannelURL(
            f"Apprise cannot use this {scheme}:// URL"
            + (f": {redact(reason, url_fragments(url))}" if reason else "")
            + f"; check it against {URL_LIST}"
        )
    return service


def _requirements(plugin: Any) -> str:
    requirements = getattr(plugin, "requirements", None) or {}
    packages = requirements.get("packages_required")
    if packages:
        listed = packages if isinstance(packages, str) else ", ".join(map(str, packages))
        return f"needs the Python package(s) {listed}"
    details = " ".join(str(requirements.get("details") or "").split())
    return details.rstrip(".")


def bound_timeouts(service: Any, url: str, timeout: float) -> None:
    """No throttle sleep, and the socket timeouts of this channel: its URL's own ``cto`` and
    ``rto`` when it sets them, else ``timeout``; never more than ``timeout``.

    Apprise's default (4 s each) applies to every URL that does not set them, so it is replaced,
    not kept: a receiver answering in 6 s under a 10 s setting must not be a failure.
    """
    asked = _url_timeouts(url)
    service.request_rate_per_sec = 0
    service.socket_connect_timeout = min(asked.get("cto", timeout), timeout)
    service.socket_read_timeout = min(asked.get("rto", timeout), timeout)


def _url_timeouts(url: str) -> dict[str, float]:
    """The ``cto``/``rto`` seconds a channel URL sets (Apprise accepts them on every URL)."""
    found: dict[str, float] = {}
    for key, values in parse_qs(urlsplit(url).query).items():
        if key.lower() in ("cto", "rto"):
            with suppress(ValueError):
                seconds = float(values[-1])
                if seconds > 0:
                    found[key.lower()] = seconds
    return found


def send_timeout(notification: Notification, configured: float) -> float:
    """The longest socket timeout a send may use: the setting, within the hub's own wait."""
    if notification.timeout_s is None:
        return configured
    return min(configured, notification.timeout_s)


def choose_text(service: Any, notification: Notification) -> tuple[str, str]:
    """(title, body): the short text for services with a small body limit (SMS, X, pagers)."""
    body_maxlen = getattr(service, "body_maxlen", None)
    if isinstance(body_maxlen, int) and body_maxlen < SHORT_BODY_LIMIT and notification.short:
        # Such services merge the title into the body; the short text stands on its own.
        return "", notification.short
    return notification.title, notification.body


def is_permanent(reasons: Iterable[str]) -> bool:
    """True if every failure line names an HTTP status a retry cannot fix (4xx but 408/425/429).

    A line without a status (connection error, timeout, an unknown text) keeps the failure
    transient: retrying is the safe default, a wrong "permanent" would skip the retries.
    """
    lines = list(reasons)
    if not lines:
        return False
    for line in lines:
        statuses = [int(code) for code in HTTP_STATUS.findall(line)]
        if not statuses:
            return False
        if any(not 400 <= code < 500 or code in RETRYABLE_4XX for code in statuses):
            return False
    return True


def deliver(notification: Notification, timeout: float) -> DeliveryResult:
    """Send one notification through Apprise, blocking; runs in a worker thread."""
    asset = new_asset()
    try:
        service = load_service(notification.url, asset)
    except InvalidChannelURL as exc:
        return DeliveryResult.failure(str(exc), permanent=True)
    bound_timeouts(service, notification.url, send_timeout(notification, timeout))
    name = str(service.service_name)
    try:
        secrets = secret_fragments(notification.url, service.url(privacy=True))
    except Exception:
        secrets = url_fragments(notification.url)
    title, body = choose_text(service, notification)
    sender = apprise.Apprise(asset=asset)
    sender.add(service)
    try:
        with sender.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT) as result:
            if result:
                return DeliveryResult.success(f"sent via {name}")
            reasons = [entry.message for entry in result.logs()]
    except Exception as exc:
        reasons = [f"Apprise raised {type(exc).__name__}: {exc}"]
    reason = "; ".join(dict.fromkeys(reasons)) or "the service reported a failure without a reason"
    detail = redact(f"{name}: {reason}", secrets)
    if len(detail) > MAX_DETAIL_LENGTH:
        detail = detail[: MAX_DETAIL_LENGTH - 1] + "…"
    return DeliveryResult.failure(detail, permanent=is_permanent(reasons))


class AppriseNotifier:
    """One notifier for every Apprise URL scheme."""

    name = "apprise"

    def __init__(self, settings: AppriseSettings | None = None) -> None:
        contain_apprise_logging()  # first: listing the schemes loads Apprise's plugins, which logs
        self.settings = settings or AppriseSettings()
        self._schemes = apprise_schemes(self.settings.exclude_schemes)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def schemes(self) -> Collection[str]:
        return self._schemes

    def validate(self, url: str) -> None:
        """Raise :class:`InvalidChannelURL` unless Apprise can load ``url`` on this hub."""
        scheme = url_scheme(url)
        if scheme not in self._schemes:
            raise InvalidChannelURL(f"the apprise notifier does not handle {scheme}:// URLs")
        contain_apprise_logging()
        load_service(url, new_asset())

    def mask(self, url: str) -> str:
        """Only the scheme and, for services Apprise says run on a server of your choosing
        (a ``host`` token in their URL template), that server's name.

        Apprise's ``url(privacy=True)`` hides passwords and API keys but keeps what names a
        person or lets anyone write to them: e-mail addresses, phone numbers, ntfy topics,
        Matrix rooms, webhook paths, the first and last letters of tokens. None of it shows.
        """
        scheme = url_scheme(url)
        service = _MANAGER[scheme] if scheme in _MANAGER else None  # noqa: SIM401 (no .get)
        template = getattr(service, "template_tokens", None) or {}
        return mask_generic(url, host_is_server="host" in template)

    async def send(self, notification: Notification) -> DeliveryResult:
        """Run the blocking Apprise call in this notifier's threads; never blocks the loop."""
        contain_apprise_logging()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.settings.max_workers, thread_name_prefix="natalia-apprise"
            )
        # A copied context per send: Apprise's per-call capture lives in context variables.
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, context.run, deliver, notification, self.settings.timeout
        )


@hookimpl
def natalia_notifiers(settings: Mapping[str, Any]) -> Iterable[Notifier]:
    """The Apprise notifier, configured from ``[plugins.apprise]``."""
    return [AppriseNotifier(AppriseSettings.from_settings(settings))]
