"""The plugin authors' harness catches the mistakes it promises to catch."""

from __future__ import annotations

import asyncio

import pytest

from hub.plugin_api import BaseNotifier, DeliveryResult, Notification
from plugins.redaction import redact, secret_fragments
from plugins.testing import check_notifier, make_notification

TOKEN = "leaky-token-0123456789abcdef"


class Leaky(BaseNotifier):
    name = "leaky"
    scheme_names = ("leaky",)

    async def send(self, notification: Notification) -> DeliveryResult:
        return DeliveryResult.failure(f"rejected {notification.url}")


class SyncNotifier:
    """A notifier with a plain ``def send``, which the hub runs in a thread."""

    name = "sync"
    schemes = ("sync",)

    def validate(self, url: str) -> None:
        return None

    def send(self, notification: Notification) -> DeliveryResult:
        return DeliveryResult.success(notification.recipient)


class Wrong(SyncNotifier):
    def send(self, notification: Notification) -> DeliveryResult:
        return True  # type: ignore[return-value]


def test_a_token_echoed_in_detail_fails_the_check():
    with pytest.raises(AssertionError, match="secret"):
        asyncio.run(check_notifier(Leaky(), f"leaky://{TOKEN}@team"))


def test_a_url_outside_the_notifiers_schemes_fails_the_check():
    with pytest.raises(AssertionError, match="schemes"):
        asyncio.run(check_notifier(Leaky(), "other://x"))


def test_a_plain_send_runs_and_its_result_is_returned():
    result = asyncio.run(check_notifier(SyncNotifier(), "sync://x"))

    assert result == DeliveryResult.success(make_notification().recipient)


def test_anything_but_a_delivery_result_fails_the_check():
    with pytest.raises(AssertionError, match="not a DeliveryResult"):
        asyncio.run(check_notifier(Wrong(), "sync://x"))


def test_redaction_hides_what_the_privacy_url_hides_and_keeps_the_host():
    url = "json://natalia:pa55word-xyz@hooks.example.org/alerts"
    masked = "json://natalia:****@hooks.example.org/alerts"

    text = redact("login pa55word-xyz refused by hooks.example.org", secret_fragments(url, masked))

    assert text == "login *** refused by hooks.example.org"
