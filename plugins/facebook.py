"""``facebook://`` — post a public alert to a Facebook Page through the Graph API.

Apprise has no Facebook service, so this plugin talks to the Graph API itself:
``POST {graph_url}/{page_id}/feed`` with the form fields ``message`` and ``access_token``. The
token travels in the form body, never in the query string, so it cannot end up in access logs or
in httpx's request log lines.

Channel URL: ``facebook://{page_access_token}@{page_id}``. Settings (``[plugins.facebook]``):
``graph_url`` (default ``https://graph.facebook.com/v21.0``; tests point it at a local receiver)
and ``timeout`` in seconds (default 10, keep it at or below the hub's send timeout).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from hub.plugin_api import (
    BaseNotifier,
    DeliveryResult,
    InvalidChannelURL,
    Notification,
    Notifier,
    PluginError,
    hookimpl,
    seconds_setting,
    settings_table,
)
from plugins.redaction import redact

FACEBOOK_SCHEMES = ("facebook",)
DEFAULT_GRAPH_URL = "https://graph.facebook.com/v21.0"
DEFAULT_TIMEOUT = 10.0
SETTINGS_KEYS = frozenset({"graph_url", "timeout"})

#: Graph error codes that mean "try again later" even when they come with HTTP 400: unknown and
#: temporary errors (1, 2) and the rate limits (4, 17, 32, 341, 613).
RETRYABLE_GRAPH_CODES = frozenset({1, 2, 4, 17, 32, 341, 613})

_PAGE_ID = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class PageChannel:
    """Where to post and with which Page access token."""

    page_id: str
    access_token: str


def parse_channel(url: str) -> PageChannel:
    """Split ``facebook://{page_access_token}@{page_id}``; errors never quote the token."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in FACEBOOK_SCHEMES:
        raise InvalidChannelURL("a Facebook channel URL starts with facebook://")
    token, at, page_id = parts.netloc.rpartition("@")
    if not at or not token:
        raise InvalidChannelURL(
            "a Facebook channel URL needs the Page access token: "
            "facebook://{page_access_token}@{page_id}"
        )
    if not _PAGE_ID.match(page_id) or parts.path.strip("/") or parts.query:
        raise InvalidChannelURL(
            "a Facebook channel URL ends with the numeric Page ID and nothing else: "
            "facebook://{page_access_token}@{page_id}"
        )
    return PageChannel(page_id=page_id, access_token=unquote(token))


def post_message(notification: Notification) -> str:
    """The post's text: a public post has no subject line, so the title leads the body."""
    if notification.title:
        return f"{notification.title}\n\n{notification.body}"
    return notification.body


class FacebookNotifier(BaseNotifier):
    """Posts notifications to a Facebook Page's feed."""

    name = "facebook"
    scheme_names = FACEBOOK_SCHEMES

    def __init__(
        self,
        graph_url: str = DEFAULT_GRAPH_URL,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.graph_url = graph_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> FacebookNotifier:
        """Build from the ``[plugins.facebook]`` table; unknown keys are a configuration error."""
        table = settings_table(settings, "facebook", SETTINGS_KEYS)
        timeout = seconds_setting(table, "facebook", "timeout", DEFAULT_TIMEOUT)
        graph_url = table.get("graph_url", DEFAULT_GRAPH_URL)
        if not isinstance(graph_url, str) or not graph_url.startswith(("https://", "http://")):
            raise PluginError("[plugins.facebook] graph_url must be an http(s):// URL")
        return cls(graph_url=graph_url, timeout=timeout)

    def validate(self, url: str) -> None:
        super().validate(url)
        parse_channel(url)

    def mask(self, url: str) -> str:
        """The Page id (public) without the Page's access token."""
        try:
            return f"facebook://***@{parse_channel(url).page_id}"
        except InvalidChannelURL:
            return "facebook://***"

    async def send(self, notification: Notification) -> DeliveryResult:
        try:
            channel = parse_channel(notification.url)
        except InvalidChannelURL as exc:
            return DeliveryResult.failure(str(exc), permanent=True)
        form = {"message": post_message(notification), "access_token": channel.access_token}
        if notification.is_test:
            # A test alarm must not reach the public: an unpublished post still proves that
            # the token and the Page work.
            form["published"] = "false"
        try:
            timeout = min(self.timeout, notification.timeout_s or self.timeout)
            async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as client:
                response = await client.post(f"{self.graph_url}/{channel.page_id}/feed", data=form)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            return DeliveryResult.failure(
                redact(f"could not reach the Facebook Graph API: {reason}", [channel.access_token])
            )
        return graph_result(response, channel.access_token)


def graph_result(response: httpx.Response, access_token: str) -> DeliveryResult:
    """Turn a Graph API answer into a result: the post id, or Graph's own error message."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.is_success:
        post_id = payload.get("id") if isinstance(payload, dict) else None
        if post_id:
            return DeliveryResult.success(f"post {post_id}")
        return DeliveryResult.failure(
            f"the Facebook Graph API answered {response.status_code} without a post id"
        )
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        error = {}
    message = str(error.get("message") or response.reason_phrase or "no error message")
    code = error.get("code")
    detail = f"Facebook Graph API error {response.status_code}: {message}"
    if error.get("type") or code is not None:
        detail += f" (type {error.get('type', '?')}, code {code if code is not None else '?'})"
    retryable = (
        response.status_code in (408, 429)
        or bool(error.get("is_transient"))
        or (isinstance(code, int) and code in RETRYABLE_GRAPH_CODES)
    )
    permanent = 400 <= response.status_code < 500 and not retryable
    return DeliveryResult.failure(redact(detail, [access_token]), permanent=permanent)


@hookimpl
def natalia_notifiers(settings: Mapping[str, Any]) -> Iterable[Notifier]:
    """The Facebook Page notifier, configured from ``[plugins.facebook]``."""
    return [FacebookNotifier.from_settings(settings)]
