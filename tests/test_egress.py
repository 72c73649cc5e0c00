"""The hub connects on someone's behalf only to where it should: internal addresses (loopback,
private, link-local, the hub itself) are refused when a URL is saved and again on the address
each connection really goes to, after DNS resolution. Real Apprise sends, real HTTP receivers,
a real hub's API."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from hub.dispatch import send_with_timeout
from hub.egress import EgressPolicy, guarded
from hub.webhooks.outbox import WebhookJob
from hub.webhooks.sender import post
from plugins.apprise_notifier import AppriseNotifier
from plugins.testing import make_notification
from sdk.models import ApiRole
from tests.support.api import ApiHub
from tests.support.receivers import HTTPReceiver

NOTHING_INTERNAL = EgressPolicy()


def _send(url: str, policy: EgressPolicy) -> Any:
    async def run() -> Any:
        with guarded(policy):
            return await send_with_timeout(AppriseNotifier(), make_notification(url=url), 10)

    return asyncio.run(run())


def test_a_channel_to_a_loopback_receiver_is_refused_at_send_time(
    http_receiver: HTTPReceiver,
) -> None:
    result = _send(f"json://127.0.0.1:{http_receiver.port}/in", NOTHING_INTERNAL)
    assert not result.ok and http_receiver.requests == []
    allowed = EgressPolicy.from_settings(["127.0.0.0/8"])
    assert _send(f"json://127.0.0.1:{http_receiver.port}/in", allowed).ok
    assert len(http_receiver.requests) == 1


def test_a_name_that_resolves_to_an_internal_address_is_refused_when_connecting(
    http_receiver: HTTPReceiver,
) -> None:
    """What DNS rebinding does: a name that looked public when saved, internal when used. The
    check is on the address the socket connects to, so the name does not matter."""
    name = socket.gethostname()  # resolves to this machine (127.0.1.1 or its own address)
    internal = str(socket.getaddrinfo(name, None)[0][4][0])
    if internal.startswith("127."):
        url = f"json://{name}:{http_receiver.port}/in"
    else:  # a public address of this machine: only the hub's receivers are on loopback
        pytest.skip("this machine's name resolves to a public address")
    result = _send(url, NOTHING_INTERNAL)
    assert not result.ok and http_receiver.requests == []


def test_a_webhook_post_to_an_internal_address_is_refused(http_receiver: HTTPReceiver) -> None:
    job = WebhookJob(1, 0, 1, f"{http_receiver.base_url}/hook", "whsec_x", b"{}", "e.1", "alarm.x")

    async def run() -> Any:
        async with httpx.AsyncClient() as client:
            with guarded(NOTHING_INTERNAL):
                return await post(client, job, 5)

    outcome = asyncio.run(run())
    assert not outcome.ok and "internal address" in outcome.detail
    assert http_receiver.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://192.168.1.1/hook",
    ],
)
def test_webhooks_to_internal_addresses_are_refused_when_created(api: ApiHub, url: str) -> None:
    with api.client(ApiRole.ADMIN) as admin:
        response = admin.post("/v1/webhooks", json={"url": url, "events": ["alarm.*"]})
    assert response.status_code == 422, response.text
    assert "internal address" in response.json()["detail"]


def test_a_webhook_to_the_hub_itself_is_refused_though_loopback_is_allowed(api: ApiHub) -> None:
    with api.client(ApiRole.ADMIN) as admin:
        response = admin.post(
            "/v1/webhooks", json={"url": f"{api.base_url}/v1/tokens", "events": ["alarm.*"]}
        )
    assert response.status_code == 422, response.text
    assert "own web server" in response.json()["detail"]


def test_guest_registration_channels_to_internal_addresses_are_refused(api: ApiHub) -> None:
    with api.client(ApiRole.INTEGRATION) as client:
        event = client.post(
            "/v1/events", json={"name": "D", "starts_on": "2031-01-01", "ends_on": "2031-01-02"}
        ).json()
        registrations = f"/v1/events/{event['id']}/registrations"
        refused = [
            client.post(registrations, json={"kind": "guest", "name": "G", "channel_url": channel})
            for channel in ("json://10.1.2.3/in", "json://169.254.169.254/x", "ntfy://[fd00::1]/t")
        ]
    assert [response.status_code for response in refused] == [422, 422, 422]
