"""A small harness for testing a notifier plugin the way the hub will use it.

::

    from plugins.testing import check_notifier, make_notification, registry_with

    async def test_my_notifier_delivers():
        result = await check_notifier(MyNotifier(...), "mine://token@team")
        assert result.ok

:func:`check_notifier` does what the hub does — validate the URL, then await ``send`` under a
timeout (a plain ``def send`` runs in a thread) — and fails with a plain message when the notifier
breaks the contract: no name, the scheme not among its ``schemes``, something other than a
:class:`DeliveryResult` coming back, or the URL's secret echoed in ``detail``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from hub.plugin_api import DeliveryResult, Notification, Notifier, url_scheme
from hub.plugin_manager import NotifierRegistry, get_plugin_manager

#: Long enough for a real provider, short enough that a hanging send fails the test.
DEFAULT_TIMEOUT = 10.0

_SECRET_QUERY_KEYS = ("token", "key", "secret", "pass", "pwd", "auth")
_TOKEN_LENGTH = 16


def make_notification(**overrides: Any) -> Notification:
    """A complete test notification; pass any :class:`Notification` field to change it."""
    fields: dict[str, Any] = {
        "delivery_id": 1,
        "url": "console://",
        "recipient": "Test contact",
        "language": "en",
        "title": "TEST ALARM: Ana needs help",
        "body": (
            "This is a test of the Natalia alarm.\n"
            "Ana pulled her wristband at 4.60971, -74.08175 (accuracy 12 m)."
        ),
        "short": "TEST Natalia alarm: Ana 4.60971,-74.08175",
        "alarm_ref": "TEST-0001",
        "is_test": True,
    }
    fields.update(overrides)
    return Notification(**fields)


def registry_with(*plugins: object, settings: Mapping[str, Any] | None = None) -> NotifierRegistry:
    """The registry the hub would build with the built-ins plus ``plugins`` (no entry points).

    Fails like the hub does when a plugin claims a scheme another one already handles.
    """
    pm = get_plugin_manager(load_entry_points=False)
    for plugin in plugins:
        pm.register(plugin)
    return NotifierRegistry.from_plugins(pm, settings or {})


async def check_notifier(
    notifier: Notifier,
    url: str,
    *,
    notification: Notification | None = None,
    send_timeout: float = DEFAULT_TIMEOUT,
) -> DeliveryResult:
    """Validate ``url``, send ``notification`` (default :func:`make_notification`) to it, and
    return the :class:`DeliveryResult` after checking the notifier kept the plugin contract."""
    if not isinstance(notifier, Notifier):
        raise AssertionError(f"{notifier!r} is not a Notifier: it needs name, schemes, send")
    if not notifier.name:
        raise AssertionError(f"{notifier!r} has an empty name; HQ sees it in delivery records")
    scheme = url_scheme(url)
    if scheme not in {s.lower() for s in notifier.schemes}:
        raise AssertionError(f"{notifier.name} does not list {scheme}:// in its schemes")
    notifier.validate(url)
    message = replace(notification or make_notification(), url=url)
    result = await asyncio.wait_for(_send(notifier, message), send_timeout)
    if not isinstance(result, DeliveryResult):
        raise AssertionError(f"{notifier.name}.send returned {result!r}, not a DeliveryResult")
    leaked = [secret for secret in url_secrets(url) if secret in result.detail]
    if leaked:
        raise AssertionError(f"{notifier.name} put a secret of its URL into detail")
    return result


async def _send(notifier: Notifier, notification: Notification) -> object:
    """Like the hub: await an ``async def send``, run a plain one in a worker thread."""
    if inspect.iscoroutinefunction(notifier.send):
        return await cast(Any, notifier.send(notification))
    result = await asyncio.to_thread(notifier.send, notification)
    if inspect.isawaitable(result):
        return await result
    return result


def url_secrets(url: str) -> list[str]:
    """The parts of a channel URL that must never appear in logs or ``detail``.

    The password, a token-long user part (``token@...``) and token-like query values; values
    under 4 characters are ignored, they would match ordinary words.
    """
    parts = urlsplit(url)
    found: list[str] = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            found.append(unquote(password))
        if len(user) >= _TOKEN_LENGTH:
            found.append(unquote(user))
    for key, value in parse_qsl(parts.query):
        if any(word in key.lower() for word in _SECRET_QUERY_KEYS):
            found.append(value)
    return [secret for secret in found if len(secret) >= 4]
