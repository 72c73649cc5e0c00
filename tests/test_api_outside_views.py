"""Consumers outside HQ — the read-only role, its live stream, partners' webhooks — are told
roles, never who was told or how to reach them. A real hub, a real alarm over MQTT, a real
HTTP receiver as the contact's channel."""

from __future__ import annotations

import json

from hub.db import make_engine
from hub.webhooks.sources import SOURCES
from sdk.models import ApiRole
from tests.support.api import ApiHub
from tests.support.live import raise_alarm
from tests.support.receivers import HTTPReceiver, wait_until

NAME = "Zarema Sister"


def test_delivered_events_name_roles_not_people_outside_hq(
    api: ApiHub, http_receiver: HTTPReceiver
) -> None:
    channel = f"json://127.0.0.1:{http_receiver.port}/zarema-inbox"
    alarm_id = raise_alarm(api, "wb-outside", contacts={NAME: channel})
    with api.client(ApiRole.HQ) as hq, api.client(ApiRole.READ_ONLY) as dashboard:

        def delivered() -> list[dict[str, object]]:
            events = hq.get(f"/v1/alarms/{alarm_id}/events").json()
            return [e for e in events if e["kind"] == "delivered"]

        wait_until(delivered)
        assert response_mentions(hq.get(f"/v1/alarms/{alarm_id}/events").text)  # HQ: names
        outside = [
            dashboard.get(f"/v1/alarms/{alarm_id}/events").text,
            dashboard.get(f"/v1/alarms/{alarm_id}/deliveries").text,
            dashboard.get("/v1/deliveries", params={"alarm_id": alarm_id}).text,
            dashboard.get("/v1/alarm-events", params={"alarm_id": alarm_id}).text,
        ]
        contacts = dashboard.get("/v1/contacts")
        (delivery,) = dashboard.get(f"/v1/alarms/{alarm_id}/deliveries").json()
    assert not any(response_mentions(text) for text in outside), outside
    assert contacts.status_code == 403  # contacts are HQ's to know
    assert (delivery["recipient"], delivery["channel"]) == ("trusted", "json://")
    # What a partner's webhook would receive for the same events.
    engine = make_engine(api.database_url)
    try:
        from sqlmodel import Session

        with Session(engine) as session:
            (source,) = [s for s in SOURCES if s.name == "alarm"]
            events = [source.to_event(session, row) for _, row in source.after(session, 0, 500)]
            bodies = [event.body() for event in events if event is not None]
    finally:
        engine.dispose()
    mine = [json.loads(b) for b in bodies if json.loads(b)["data"]["alarm"]["id"] == alarm_id]
    assert any(event["type"] == "alarm.delivered" for event in mine)
    assert not any(response_mentions(json.dumps(event)) for event in mine)


def response_mentions(text: str) -> bool:
    """Whether ``text`` names the contact or shows her channel."""
    return NAME in text or "zarema-inbox" in text or "127.0.0.1" in text
