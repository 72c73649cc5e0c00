"""Wristbands whose alarms are cancelled with the real code or the duress code, over a real
broker, and the helpers the duress tests share: HQ's link, settled deliveries, streamed events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx

from devicekit.protocol import Cancel, utcnow
from hub import admin
from hub.db import make_engine
from hub.models import Role
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from tests.support.api import ApiHub
from tests.support.device import make_alarm
from tests.support.live import ServerSentEvent
from tests.support.population import Population, populate_on_broker
from tests.support.receivers import HTTPReceiver, wait_until

CANCEL_CODE, DURESS_CODE = "4711", "9999"
FINAL = {"sent", "failed", "dead", "cancelled"}


def add_hq_desk(api: ApiHub, receiver: HTTPReceiver) -> None:
    """HQ's desk as a contact for every alarm: ``/hq`` on ``receiver`` (its messages hold HQ's
    links, :func:`hq_link`)."""
    engine = make_engine(api.database_url)
    try:
        registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
        desk = f"json://127.0.0.1:{receiver.port}/hq"
        admin.add_contact(engine, registry, "HQ desk", desk, None, role=Role.HQ)
    finally:
        engine.dispose()


class Wristband:
    """A defender with both codes, a trusted contact, and her wristband on the broker."""

    def __init__(self, api: ApiHub, receiver: HTTPReceiver, device_id: str) -> None:
        self.api = api
        engine = make_engine(api.database_url)
        try:
            sister = f"json://127.0.0.1:{receiver.port}/sister-{device_id}"
            people: Population = populate_on_broker(
                engine, api.broker, {"Sister": sister}, device_id=device_id
            )
            admin.set_defender_options(
                engine, people.defender_id, cancel_code=CANCEL_CODE, duress_code=DURESS_CODE
            )
        finally:
            engine.dispose()
        self.device = people.raw_device(api.broker)
        self.device_id = device_id
        self.alarm_id = 0

    def raise_alarm(self, hq: httpx.Client) -> int:
        """Pull the wristband; returns once the first round is complete (``notified``)."""
        message = make_alarm(f"{self.device_id}-1", seq=1)
        assert self.device.publish("alarm", message.to_payload()) == "Success"
        page = wait_until(
            lambda: hq.get("/v1/alarms", params={"device_id": self.device_id}).json()["items"]
        )
        self.alarm_id = int(page[0]["id"])
        wait_until(lambda: hq.get(f"/v1/alarms/{self.alarm_id}").json()["state"] == "notified")
        return self.alarm_id

    def cancel(self, code: str) -> None:
        cancel = Cancel(alarm_id=f"{self.device_id}-1", ts=utcnow(), seq=2, code=code)
        assert self.device.publish("cancel", cancel.to_payload()) == "Success"
        wait_until(lambda: "cancelled" in self.device.stages(f"{self.device_id}-1"))

    def close(self) -> None:
        self.device.close()


def settle(hq: httpx.Client, alarm_id: int) -> None:
    """Wait until every message about the alarm has its outcome (HQ's view: all of them)."""

    def done() -> bool:
        deliveries = hq.get(f"/v1/alarms/{alarm_id}/deliveries").json()
        return {d["status"] for d in deliveries} <= FINAL

    wait_until(done)


def event_ids(client: httpx.Client, alarm_id: int) -> list[int]:
    return [e["id"] for e in client.get(f"/v1/alarms/{alarm_id}/events").json()]


def hq_link(receiver: HTTPReceiver, alarm_id: int) -> str:
    """The link in HQ's first message about the alarm."""
    for request in list(receiver.requests):
        message = json.loads(request.body).get("message", "")
        if request.path == "/hq" and f"A{alarm_id}" in message and "/ack/" in message:
            found = re.search(r"https?://\S+/ack/\S+", message)
            assert found is not None
            return found.group(0)
    raise AssertionError(f"HQ got no link for A{alarm_id}")


def stream_events(stream: Iterator[ServerSentEvent], until: int) -> list[dict[str, Any]]:
    """The stream's events up to and including the one with id ``until`` (ids outside HQ say
    nothing of order: only equality)."""
    found = []
    for message in stream:
        if message.is_event:
            event: dict[str, Any] = json.loads("\n".join(message.data))
            assert message.id == str(event["id"]) and message.event == event["kind"]
            found.append(event)
            if event["id"] == until:
                return found
    raise AssertionError("the stream ended")
