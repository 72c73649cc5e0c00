"""Outgoing webhooks end to end: a real hub (real Mosquitto, a wristband alarm over MQTT) POSTing
to a real HTTP receiver, each request verified with the SDK's own helper.

tests/test_webhooks_storage.py covers fan-out and claims on SQLite and PostgreSQL, and
tests/test_sdk_webhooks.py the signature's edge cases."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.actions import AlarmActions
from hub.config import WebhooksConfig
from hub.db import make_engine
from sdk.models import ApiRole, WebhookEvent
from sdk.webhooks import verify_signature
from tests.support.api import ApiHub, start_hub_with_api
from tests.support.brokers import RunningBroker, start_broker
from tests.support.live import raise_alarm
from tests.support.receivers import HTTPReceiver, ReceivedRequest, wait_until

#: Deliveries that are still to be sent, or being sent.
OPEN = ("pending", "sending", "retrying")
#: Quick retries, so a test sees a delivery die in well under a second.
FAST_RETRIES = WebhooksConfig(
    timeout_s=2, max_attempts=3, backoff_base_s=0.05, backoff_cap_s=0.2, deadline_s=60
)


def start_hub(broker: RunningBroker, database_url: str) -> ApiHub:
    """A hub with its API and ``FAST_RETRIES`` webhooks."""
    return start_hub_with_api(broker, database_url, webhooks=FAST_RETRIES)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiHub]:
    directory = tmp_path_factory.mktemp("webhooks")
    broker = start_broker(directory / "broker")
    try:
        running = start_hub(broker, f"sqlite:///{directory / 'natalia.db'}")
        try:
            yield running
        finally:
            running.running.stop()
    finally:
        broker.process.stop()


def subscribe(hub: ApiHub, receiver: HTTPReceiver, events: list[str]) -> dict[str, Any]:
    with hub.client() as admin:
        response = admin.post(
            "/v1/webhooks", json={"url": f"{receiver.base_url}/hook", "events": events}
        )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def header(request: ReceivedRequest, name: str) -> str:
    return {key.lower(): value for key, value in request.headers.items()}[name.lower()]


def posts_about(
    receiver: HTTPReceiver, alarm_id: int
) -> list[tuple[ReceivedRequest, WebhookEvent]]:
    found = []
    for request in list(receiver.requests):
        event = WebhookEvent.model_validate_json(request.body)
        if event.data["alarm"]["id"] == alarm_id:
            found.append((request, event))
    return found


def deliveries(hub: ApiHub, webhook_id: int) -> list[dict[str, Any]]:
    with hub.client() as admin:
        response = admin.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 200})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def event_ids(hub: ApiHub, alarm_id: int) -> list[str]:
    """The webhook event ids of the alarm's timeline: named by the ids outside HQ sees."""
    with hub.client(ApiRole.READ_ONLY) as client:
        return [
            f"alarm_event.{e['id']}" for e in client.get(f"/v1/alarms/{alarm_id}/events").json()
        ]


def act(hub: ApiHub, alarm_id: int, action: str) -> None:
    with hub.client(ApiRole.HQ) as client:
        response = client.post(f"/v1/alarms/{alarm_id}/{action}", json={})
    assert response.status_code == 200, response.text


# -- through a real hub --------------------------------------------------------------------------


def test_each_event_is_posted_signed_over_the_exact_bytes(
    hub: ApiHub, http_receiver: HTTPReceiver
) -> None:
    webhook = subscribe(hub, http_receiver, ["alarm.*"])
    assert webhook["secret"].startswith("whsec_") and webhook["active"] is True
    alarm_id = raise_alarm(hub, "wb-signed")
    # Sends run side by side: the alarm's first events may arrive in any order.
    [(request, event)] = wait_until(
        lambda: [p for p in posts_about(http_receiver, alarm_id) if p[1].type == "alarm.received"]
    )

    verify_signature(request.body, header(request, "Natalia-Signature"), webhook["secret"])
    assert (request.method, request.path) == ("POST", "/hook")
    assert header(request, "Content-Type") == "application/json"
    assert header(request, "User-Agent") == "natalia-hub"
    assert header(request, "Natalia-Event-Id") == event.id == event_ids(hub, alarm_id)[0]
    assert header(request, "Natalia-Event-Type") == event.type == "alarm.received"
    assert (
        event.data["event"]["kind"] == "received" and event.data["alarm"]["ref"] == f"A{alarm_id}"
    )
    delivered = wait_until(
        lambda: [
            d
            for d in deliveries(hub, webhook["id"])
            if d["event_id"] == event.id and d["delivered_at"]
        ]
    )
    assert header(request, "Natalia-Delivery") == str(delivered[0]["id"])
    assert (delivered[0]["status"], delivered[0]["response_status"]) == ("delivered", 200)


def test_a_receiver_answering_500_then_200_gets_the_same_event_again(
    hub: ApiHub, http_receiver: HTTPReceiver
) -> None:
    alarm_id = raise_alarm(hub, "wb-retry")
    http_receiver.responses = [(500, b"busy")]
    webhook = subscribe(hub, http_receiver, ["alarm.acknowledged"])
    act(hub, alarm_id, "acknowledge")
    first, second = (
        r
        for r, _ in wait_until(
            lambda: (
                len(posts_about(http_receiver, alarm_id)) == 2
                and posts_about(http_receiver, alarm_id)
            )
        )
    )
    assert header(first, "Natalia-Event-Id") == header(second, "Natalia-Event-Id")
    assert first.body == second.body
    for request in (first, second):
        verify_signature(request.body, header(request, "Natalia-Signature"), webhook["secret"])
    [row] = wait_until(
        lambda: [d for d in deliveries(hub, webhook["id"]) if d["status"] == "delivered"]
    )
    assert (row["attempts"], row["response_status"], row["event_type"]) == (
        2,
        200,
        "alarm.acknowledged",
    )


def test_a_delivery_is_dead_after_max_attempts_and_stays_listed(
    hub: ApiHub, http_receiver: HTTPReceiver
) -> None:
    alarm_id = raise_alarm(hub, "wb-dead")
    http_receiver.default = (503, b"down")
    webhook = subscribe(hub, http_receiver, ["alarm.verified"])
    act(hub, alarm_id, "verify")
    [row] = wait_until(lambda: [d for d in deliveries(hub, webhook["id"]) if d["status"] == "dead"])
    assert (row["attempts"], row["response_status"]) == (3, 503)
    assert "HTTP 503" in row["detail"] and "gave up after 3 attempts" in row["detail"]
    assert len(posts_about(http_receiver, alarm_id)) == 3


def test_filters_choose_the_event_types(hub: ApiHub, http_receiver: HTTPReceiver) -> None:
    alarm_id = raise_alarm(hub, "wb-filter")
    chosen = subscribe(hub, http_receiver, ["alarm.acknowledged", "alarm.res*"])
    witness = subscribe(hub, http_receiver, ["*"])
    for action in ("acknowledge", "verify", "resolve"):
        act(hub, alarm_id, action)
    last = event_ids(hub, alarm_id)[-1]
    # The witness takes every event: once it has the last one, the fan-out is past them all.
    wait_until(lambda: any(d["event_id"] == last for d in deliveries(hub, witness["id"])))
    types = sorted(d["event_type"] for d in deliveries(hub, chosen["id"]))
    assert types == ["alarm.acknowledged", "alarm.resolved"]


def test_410_gone_deactivates_the_webhook(hub: ApiHub, http_receiver: HTTPReceiver) -> None:
    alarm_id = raise_alarm(hub, "wb-gone")
    http_receiver.responses = [(410, b"")]
    gone = subscribe(hub, http_receiver, ["alarm.acknowledged", "alarm.verified"])
    act(hub, alarm_id, "acknowledge")
    [row] = wait_until(lambda: [d for d in deliveries(hub, gone["id"]) if d["status"] == "dead"])
    assert row["response_status"] == 410 and row["attempts"] == 1
    with hub.client() as admin:
        assert admin.get(f"/v1/webhooks/{gone['id']}").json()["active"] is False
    witness = subscribe(hub, http_receiver, ["alarm.verified"])
    act(hub, alarm_id, "verify")
    wait_until(lambda: deliveries(hub, witness["id"]))
    assert [d["event_type"] for d in deliveries(hub, gone["id"])] == ["alarm.acknowledged"]


def test_deleting_a_webhook_cancels_its_delivery(hub: ApiHub, http_receiver: HTTPReceiver) -> None:
    alarm_id = raise_alarm(hub, "wb-delete")
    http_receiver.default = (500, b"")
    http_receiver.delay = 1.0  # the first attempt is still under way when the webhook goes
    webhook = subscribe(hub, http_receiver, ["alarm.acknowledged"])
    act(hub, alarm_id, "acknowledge")
    wait_until(lambda: posts_about(http_receiver, alarm_id))
    with hub.client() as admin:
        assert admin.delete(f"/v1/webhooks/{webhook['id']}").status_code == 204
        assert admin.get(f"/v1/webhooks/{webhook['id']}").json()["active"] is False
    [row] = wait_until(
        lambda: [d for d in deliveries(hub, webhook["id"]) if d["status"] not in OPEN]
    )
    assert (row["status"], row["attempts"]) == ("cancelled", 1)
    assert "the webhook was deleted" in row["detail"]
    assert len(posts_about(http_receiver, alarm_id)) == 1


def test_webhooks_are_checked_and_the_secret_is_shown_once(
    hub: ApiHub, http_receiver: HTTPReceiver
) -> None:
    with hub.client() as admin:
        typo = admin.post(
            "/v1/webhooks", json={"url": http_receiver.base_url, "events": ["alarms.*"]}
        )
        empty = admin.post("/v1/webhooks", json={"url": http_receiver.base_url, "events": []})
        ftp = admin.post("/v1/webhooks", json={"url": "ftp://example.org/x"})
        made = admin.post(
            "/v1/webhooks",
            json={"url": "https://user:pw@partner.example.org/h?token=abcdefghijklmnop"},
        ).json()
        shown = admin.get(f"/v1/webhooks/{made['id']}").json()
        listed = admin.get("/v1/webhooks", params={"limit": 200}).json()["items"]
        missing = admin.get("/v1/webhooks/999999/deliveries")
    with hub.client(ApiRole.HQ) as hq:
        forbidden = hq.get("/v1/webhooks")
    assert typo.status_code == 422 and '"alarm."' in typo.json()["detail"]
    assert empty.status_code == 422 and ftp.status_code == 422
    assert made["events"] == ["*"] and made["secret"].startswith("whsec_")
    assert "secret" not in shown and all("secret" not in item for item in listed)
    assert "pw" not in shown["url"] and "abcdefghijklmnop" not in shown["url"]
    assert missing.status_code == 404 and forbidden.status_code == 403


def test_a_restarted_hub_sends_each_event_once_including_those_made_while_it_was_down(
    tmp_path: Path, http_receiver: HTTPReceiver
) -> None:
    broker = start_broker(tmp_path / "broker")
    database_url = f"sqlite:///{tmp_path / 'natalia.db'}"

    def received(alarm_id: int) -> Counter[str]:
        return Counter(event.id for _, event in posts_about(http_receiver, alarm_id))

    try:
        first = start_hub(broker, database_url)
        try:
            webhook = subscribe(first, http_receiver, ["*"])
            alarm_id = raise_alarm(first, "wb-restart")
            wait_until(lambda: received(alarm_id))
        finally:
            first.running.stop()
        before_restart = received(alarm_id)
        engine = make_engine(database_url)
        AlarmActions(engine).acknowledge(f"A{alarm_id}", "cli:duty")  # as the CLI would
        engine.dispose()
        second = start_hub(broker, database_url)
        try:
            wanted = set(event_ids(second, alarm_id))
            wait_until(lambda: set(received(alarm_id)) >= wanted)
            counts = received(alarm_id)
            listed = Counter(d["event_id"] for d in deliveries(second, webhook["id"]))
        finally:
            second.running.stop()
    finally:
        broker.process.stop()
    acknowledged = [
        e for _, e in posts_about(http_receiver, alarm_id) if e.type == "alarm.acknowledged"
    ]
    assert acknowledged and acknowledged[0].data["event"]["actor"] == "hq"
    assert set(before_restart) < wanted  # some were sent by the second hub only
    assert max(counts.values()) == 1, counts  # nothing sent twice across the restart
    assert max(listed.values()) == 1


def test_fund_request_changes_are_posted_to_fund_subscribers(
    hub: ApiHub, http_receiver: HTTPReceiver
) -> None:
    webhook = subscribe(hub, http_receiver, ["fund_request.approved", "fund_request.created"])
    with hub.client(ApiRole.HQ) as client:
        defender = client.post("/v1/defenders", json={"name": "Fund webhook"}).json()
    with hub.client(ApiRole.INTEGRATION) as fund:
        request = fund.post(
            "/v1/fund-requests",
            json={
                "defender_id": defender["id"],
                "purpose": "security_solutions",
                "amount": "950.50",
                "currency": "EUR",
            },
        ).json()
    with hub.client(ApiRole.HQ) as client:
        for state in ("under_review", "approved"):
            moved = client.post(
                f"/v1/fund-requests/{request['id']}/transitions", json={"state": state}
            )
            assert moved.status_code == 200, moved.text

    def about_request() -> list[tuple[ReceivedRequest, WebhookEvent]]:
        events = [(r, WebhookEvent.model_validate_json(r.body)) for r in http_receiver.requests]
        return [(r, e) for r, e in events if e.data["request"]["id"] == request["id"]]

    posts = wait_until(lambda: len(about_request()) == 2 and about_request())
    assert sorted(event.type for _, event in posts) == [
        "fund_request.approved",
        "fund_request.created",
    ]  # "under_review" was not subscribed to
    for received, _ in posts:
        verify_signature(received.body, header(received, "Natalia-Signature"), webhook["secret"])
    approved = next(event for _, event in posts if event.type == "fund_request.approved")
    assert approved.data["request"]["state"] == "approved"
    assert approved.data["request"]["amount"] == "950.50"
    assert approved.data["event"]["actor"] == "hq"  # partners are told roles, not people
