"""``example://`` — deliver Natalia notifications to a partner's own system through a webhook.

A template to copy: rename the module, the scheme and the settings table, and adapt
:func:`payload` to what your system expects. Everything else (URL parsing that never echoes the
key, one timeout per request, failures as results, 4xx = permanent) is what every notifier needs.

Channel URL (one per recipient, stored by the hub): ``example://{api_key}@{team}``, e.g.
``example://s3cr3t-key@legal-team``.

Hub config::

    [plugins.example]
    endpoint = "https://cases.example.org/api/natalia/alerts"   # required
    timeout = 10                                                # seconds, optional

Request: ``POST {endpoint}`` with ``Authorization: Bearer {api_key}``, an ``Idempotency-Key``
header (the hub may deliver the same notification twice; your system can drop the repeat) and a
JSON body, see :func:`payload`. A 2xx answer is a success; ``{"id": ...}`` in it becomes the
delivery's detail.
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
)

SCHEMES = ("example",)
SETTINGS_TABLE = "example"
DEFAULT_TIMEOUT = 10.0

_TEAM = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Channel:
    api_key: str
    team: str


def parse_channel(url: str) -> Channel:
    """Split ``example://{api_key}@{team}``. Error messages never quote the key."""
    parts = urlsplit(url)
    key, at, team = parts.netloc.rpartition("@")
    if not at or not key:
        raise InvalidChannelURL("an example:// URL needs the API key: example://{api_key}@{team}")
    if not _TEAM.match(team) or parts.path.strip("/") or parts.query:
        raise InvalidChannelURL(
            "an example:// URL ends with the team's name (lower-case letters, digits, dashes): "
            "example://{api_key}@{team}"
        )
    return Channel(api_key=unquote(key), team=team)


def payload(notification: Notification, team: str) -> dict[str, Any]:
    """The JSON body your system receives. Adapt this to your API."""
    return {
        "team": team,
        "recipient": notification.recipient,
        "language": notification.language,
        "title": notification.title,
        "body": notification.body,
        "alarm": notification.alarm_ref,
        "test": notification.is_test,
    }


class ExampleNotifier(BaseNotifier):
    """POSTs each notification as JSON to the configured endpoint."""

    name = "example"
    scheme_names = SCHEMES

    def __init__(
        self,
        endpoint: str,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        # Tests pass httpx.MockTransport here; the hub never does.
        self._transport = transport

    def validate(self, url: str) -> None:
        super().validate(url)
        parse_channel(url)

    async def send(self, notification: Notification) -> DeliveryResult:
        try:
            channel = parse_channel(notification.url)
        except InvalidChannelURL as exc:
            return DeliveryResult.failure(str(exc), permanent=True)
        headers = {
            "Authorization": f"Bearer {channel.api_key}",
            "Idempotency-Key": f"natalia-{notification.delivery_id}",
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as client:
                response = await client.post(
                    self.endpoint, json=payload(notification, channel.team), headers=headers
                )
        except httpx.HTTPError as exc:
            # httpx's messages name the endpoint, never the Authorization header.
            return DeliveryResult.failure(f"webhook unreachable: {exc or type(exc).__name__}")
        if response.is_success:
            try:
                answer = response.json()
            except ValueError:
                answer = None
            reference = answer.get("id") if isinstance(answer, dict) else None
            return DeliveryResult.success(f"case {reference}" if reference else "accepted")
        return DeliveryResult.failure(
            f"webhook answered {response.status_code} {response.reason_phrase}",
            # 4xx: our request is wrong (bad key, unknown team) and a retry will not fix it;
            # except 408/429, which ask us to come back later.
            permanent=400 <= response.status_code < 500 and response.status_code not in (408, 429),
        )


@hookimpl
def natalia_notifiers(settings: Mapping[str, Any]) -> Iterable[Notifier]:
    """The hook the hub calls at start-up; ``settings`` is the hub's whole ``[plugins]`` table."""
    table = settings.get(SETTINGS_TABLE, {})
    endpoint = table.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        raise PluginError(
            f"[plugins.{SETTINGS_TABLE}] endpoint is not set: add "
            f'endpoint = "https://..." to the hub config, or uninstall natalia-notifier-example'
        )
    timeout = seconds_setting(table, SETTINGS_TABLE, "timeout", DEFAULT_TIMEOUT)
    return [ExampleNotifier(endpoint, timeout=timeout)]
