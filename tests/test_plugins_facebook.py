"""The Facebook Page notifier against a local stand-in for the Graph API.

Facebook is on the internet, so a real HTTP receiver plays Graph and each test checks the
request Graph would get.
"""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import parse_qs

import pytest

from hub.plugin_api import InvalidChannelURL, PluginError
from plugins.facebook import DEFAULT_GRAPH_URL, FacebookNotifier, natalia_notifiers
from plugins.testing import check_notifier, make_notification
from tests.support.receivers import HTTPReceiver

TOKEN = "EAAGm0PX4ZCpsBAPageAccessToken0123456789abcdef"
PAGE = "104857600123456"
URL = f"facebook://{TOKEN}@{PAGE}"


def notifier_for(receiver: HTTPReceiver) -> FacebookNotifier:
    (notifier,) = natalia_notifiers(
        settings={"facebook": {"graph_url": f"{receiver.base_url}/v21.0", "timeout": 5}}
    )
    assert isinstance(notifier, FacebookNotifier)
    return notifier


def graph_error(message: str, code: int, kind: str = "OAuthException") -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "code": code, "fbtrace_id": "AbC123"}}
    ).encode()


def test_a_post_is_a_form_to_the_page_feed_with_the_token_in_the_body(
    http_receiver: HTTPReceiver,
):
    http_receiver.responses.append((200, b'{"id": "104857600123456_987654321"}'))
    note = make_notification(
        title="ALARM: Ana needs help", body="Ana at 4.60971,-74.08175.", is_test=False
    )

    result = asyncio.run(check_notifier(notifier_for(http_receiver), URL, notification=note))

    assert result.ok and result.detail == "post 104857600123456_987654321"
    (request,) = http_receiver.requests
    assert (request.method, request.path) == ("POST", f"/v21.0/{PAGE}/feed")
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.body.decode(), strict_parsing=True) == {
        "message": ["ALARM: Ana needs help\n\nAna at 4.60971,-74.08175."],
        "access_token": [TOKEN],
    }
    assert TOKEN not in request.path


def test_a_test_alarm_is_posted_unpublished(http_receiver: HTTPReceiver):
    http_receiver.responses.append((200, b'{"id": "1_2"}'))

    result = asyncio.run(
        check_notifier(notifier_for(http_receiver), URL, notification=make_notification())
    )

    assert result.ok
    assert parse_qs(http_receiver.requests[0].body.decode())["published"] == ["false"]


def test_a_graph_error_400_is_a_permanent_failure_with_graphs_message(
    http_receiver: HTTPReceiver,
):
    http_receiver.responses.append((400, graph_error("Error validating access token.", 190)))

    result = asyncio.run(check_notifier(notifier_for(http_receiver), URL))

    assert not result.ok and result.permanent
    assert "Error validating access token." in result.detail and "190" in result.detail


def test_a_graph_message_quoting_the_token_is_masked(http_receiver: HTTPReceiver):
    http_receiver.responses.append((400, graph_error(f"Malformed access token {TOKEN}", 190)))

    result = asyncio.run(check_notifier(notifier_for(http_receiver), URL))

    assert "Malformed access token ***" in result.detail and TOKEN not in result.detail


def test_a_server_error_500_is_not_permanent(http_receiver: HTTPReceiver):
    http_receiver.responses.append((500, graph_error("An unexpected error has occurred.", 2)))

    result = asyncio.run(check_notifier(notifier_for(http_receiver), URL))

    assert not result.ok and not result.permanent
    assert "An unexpected error has occurred." in result.detail


def test_a_rate_limit_reported_as_400_is_not_permanent(http_receiver: HTTPReceiver):
    http_receiver.responses.append((400, graph_error("(#32) Page request limit reached", 32)))

    result = asyncio.run(check_notifier(notifier_for(http_receiver), URL))

    assert not result.ok and not result.permanent


def test_an_unreachable_graph_api_is_a_retryable_failure():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    notifier = FacebookNotifier(graph_url=f"http://127.0.0.1:{port}/v21.0", timeout=2)

    result = asyncio.run(check_notifier(notifier, URL))

    assert not result.ok and not result.permanent
    assert result.detail.startswith("could not reach the Facebook Graph API")


@pytest.mark.parametrize(
    "url",
    [f"facebook://{PAGE}", f"facebook://{TOKEN}@my-page", f"facebook://{TOKEN}@{PAGE}/feed"],
)
def test_a_malformed_channel_url_is_refused_without_echoing_the_token(url):
    with pytest.raises(InvalidChannelURL) as refused:
        FacebookNotifier().validate(url)

    assert TOKEN not in str(refused.value)


def test_the_default_graph_url_is_the_real_graph_api():
    (notifier,) = natalia_notifiers(settings={})

    assert isinstance(notifier, FacebookNotifier) and notifier.graph_url == DEFAULT_GRAPH_URL
    assert DEFAULT_GRAPH_URL == "https://graph.facebook.com/v21.0"


@pytest.mark.parametrize("table", [{"graph": "x"}, {"timeout": -1}, {"graph_url": "graph.fb"}])
def test_a_wrong_setting_stops_the_hub_with_a_message(table):
    with pytest.raises(PluginError, match=r"\[plugins.facebook\]"):
        natalia_notifiers(settings={"facebook": table})
