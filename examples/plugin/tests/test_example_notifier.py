"""Tests for the example notifier, written with Natalia's plugin test harness.

The partner's system is a service on the internet, so these tests replace it with
``httpx.MockTransport`` and check the exact request it would receive.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import natalia_notifier_example as example
import pytest

from hub.plugin_api import InvalidChannelURL, PluginError
from plugins.testing import check_notifier, make_notification, registry_with

API_KEY = "example-api-key-0123456789"
URL = f"example://{API_KEY}@legal-team"
ENDPOINT = "https://cases.example.org/api/natalia/alerts"


def notifier_answering(
    status: int, body: bytes, seen: list[httpx.Request]
) -> example.ExampleNotifier:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    return example.ExampleNotifier(ENDPOINT, transport=httpx.MockTransport(answer))


def test_delivery_posts_the_notification_as_json_with_the_key_in_a_header() -> None:
    seen: list[httpx.Request] = []
    notifier = notifier_answering(201, b'{"id": "case-77"}', seen)

    note = make_notification(delivery_id=9)

    result = asyncio.run(check_notifier(notifier, URL, notification=note))

    assert result.ok and result.detail == "case case-77"
    (request,) = seen
    assert request.method == "POST" and str(request.url) == ENDPOINT
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Idempotency-Key"] == "natalia-9"
    body = json.loads(request.content)
    assert body["team"] == "legal-team" and body["alarm"] == "TEST-0001" and body["test"] is True
    assert API_KEY not in str(request.url)


def test_a_rejected_key_is_a_permanent_failure_and_a_server_error_is_not() -> None:
    rejected = asyncio.run(check_notifier(notifier_answering(401, b"", []), URL))
    broken = asyncio.run(check_notifier(notifier_answering(503, b"", []), URL))

    assert not rejected.ok and rejected.permanent and "401" in rejected.detail
    assert not broken.ok and not broken.permanent and "503" in broken.detail


def test_a_malformed_url_is_refused_without_echoing_the_key() -> None:
    notifier = example.ExampleNotifier(ENDPOINT)

    with pytest.raises(InvalidChannelURL) as refused:
        notifier.validate(f"example://{API_KEY}@Not A Team")

    assert API_KEY not in str(refused.value)


def test_the_hub_routes_example_urls_to_this_plugin() -> None:
    registry = registry_with(example, settings={"example": {"endpoint": ENDPOINT}})

    assert registry.for_url(URL).name == "example"


def test_the_hub_refuses_to_start_without_an_endpoint() -> None:
    with pytest.raises(PluginError, match="endpoint"):
        registry_with(example, settings={})
