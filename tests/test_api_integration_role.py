"""A stolen integration token against a real hub and a real Mosquitto.

The integration role is a partner's system (the fund's, the conference's). Whoever steals its
token must not be able to raise an alarm in a defender's name, obtain a device secret, or learn
anything about defenders: not their names, not which ids exist, not which alarm is whose. And a
training wristband — whoever ends up holding its credentials — raises nothing but a training
alarm for its own participant, never for HQ, the defender's contacts or responders nearby.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from devicekit.protocol import Alarm as AlarmMessage
from devicekit.protocol import AlarmKind, Position, utcnow
from hub.db import make_engine
from hub.models import Alarm, Delivery
from hub.responders import record_position_by_id
from sdk.models import ApiRole
from tests.support.api import ApiHub
from tests.support.device import RawDevice
from tests.support.receivers import HTTPReceiver, wait_until

INTEGRATION, HQ = ApiRole.INTEGRATION, ApiRole.HQ
#: Where the forged alarm claims to be, and a responder 70 m from it.
ALARM_AT = (41.7151, 44.8271)
RESPONDER_AT = (41.7157, 44.8272)
#: Fields whose value is a device secret, wherever they appear in an answer.
SECRET_FIELDS = {"password", "key", "mqtt_password"}


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _secrets_in(value: Any) -> list[str]:
    """Every non-empty secret field anywhere in a JSON answer."""
    if isinstance(value, dict):
        found = [k for k, v in value.items() if k in SECRET_FIELDS and v not in (None, "")]
        return found + [s for v in value.values() for s in _secrets_in(v)]
    if isinstance(value, list):
        return [s for item in value for s in _secrets_in(item)]
    return []


def _answer(response: httpx.Response) -> tuple[int, str]:
    """What a caller learns from an error: its status and its text."""
    return response.status_code, response.json().get("detail", "")


@pytest.fixture
def inbox() -> Iterator[HTTPReceiver]:
    receiver = HTTPReceiver().start()
    yield receiver
    receiver.stop()


def _paths(inbox: HTTPReceiver) -> list[str]:
    return [request.path for request in list(inbox.requests)]


def _hq_scene(api: ApiHub, inbox: HTTPReceiver) -> dict[str, Any]:
    """What HQ set up: a defender with a trusted contact (taking tests), HQ's desk, a
    responder near the alarm's position (taking tests), the defender registered for an event
    whose training is on."""
    url = f"json://127.0.0.1:{inbox.port}"
    name = f"Defender {uuid.uuid4().hex[:6]}"
    with api.client(HQ) as hq:
        defender_id = _created(hq.post("/v1/defenders", json={"name": name}))["id"]
        contacts = [
            {"name": "Sister", "channel_url": f"{url}/sister", "defender_id": defender_id},
            {"name": "HQ desk", "channel_url": f"{url}/hq"},
        ]
        for contact in contacts:
            _created(hq.post("/v1/contacts", json=contact | {"receives_tests": True}))
        responder = _created(
            hq.post(
                "/v1/responders",
                json={"name": "Rider", "channel_url": f"{url}/responder", "receives_tests": True},
            )
        )
        event = _created(
            hq.post(
                "/v1/events",
                json={"name": "Days", "starts_on": "2031-05-10", "ends_on": "2031-05-12"},
            )
        )
        registration = _created(
            hq.post(
                f"/v1/events/{event['id']}/registrations",
                json={
                    "kind": "defender",
                    "defender_id": defender_id,
                    "channel_url": f"{url}/trainee",
                },
            )
        )
        (kit,) = _created(hq.post(f"/v1/events/{event['id']}/training"))["kits"]
    engine = make_engine(api.database_url)
    try:
        record_position_by_id(engine, responder["id"], *RESPONDER_AT, 5.0, datetime.now(UTC))
    finally:
        engine.dispose()
    return {
        "defender_id": defender_id,
        "name": name,
        "event_id": event["id"],
        "registration_id": registration["id"],
        "kit": kit,
    }


def test_an_integration_token_gets_no_device_secret_and_no_defender_registration(
    api: ApiHub, inbox: HTTPReceiver
) -> None:
    scene = _hq_scene(api, inbox)
    event, defender_id = scene["event_id"], scene["defender_id"]
    answers: list[httpx.Response] = []
    with api.client(INTEGRATION) as thief:
        own = _created(
            thief.post(
                "/v1/events",
                json={"name": "Mine", "starts_on": "2031-06-01", "ends_on": "2031-06-02"},
            )
        )["id"]
        for target in (event, own):
            registrations = f"/v1/events/{target}/registrations"
            existing = thief.post(
                registrations, json={"kind": "defender", "defender_id": defender_id}
            )
            missing = thief.post(registrations, json={"kind": "defender", "defender_id": 987654})
            # The same answer whether the defender exists or not: nothing to enumerate.
            assert _answer(existing) == _answer(missing)
            assert existing.status_code == 403
            answers += [
                existing,
                missing,
                thief.post(f"/v1/events/{target}/training"),
                thief.get(f"/v1/events/{target}/training"),
                thief.post(
                    f"/v1/events/{target}/training/alarms",
                    json={"registration_id": scene["registration_id"]},
                ),
                thief.delete(f"/v1/events/{target}/training"),
                thief.get(registrations),
            ]
        hq_registration = f"/v1/events/{event}/registrations/{scene['registration_id']}"
        seen = thief.get(hq_registration)
        nowhere = thief.get(f"/v1/events/{event}/registrations/987654")
        cancel = thief.delete(hq_registration)
        training = thief.get(f"/v1/events/{event}/training").json()
        listed = thief.get(f"/v1/events/{event}/registrations").json()

    for response in answers:
        if response.headers.get("content-type", "").endswith("json"):
            assert _secrets_in(response.json()) == [], response.text
        assert scene["name"] not in response.text
    assert [r.status_code for r in answers[2:6]] == [403, 200, 403, 403]
    # HQ's registration of the defender is not there for the integration, nor its kit.
    assert _answer(seen) == (404, f"no registration {scene['registration_id']} in event {event}")
    assert _answer(nowhere) == (404, f"no registration 987654 in event {event}")
    assert cancel.status_code == 404
    assert training["kits"] == [] and training["active"] is True
    assert listed["items"] == []


def test_a_training_wristband_publishing_a_panic_alerts_only_its_participant(
    api: ApiHub, inbox: HTTPReceiver
) -> None:
    """Its credentials leaked (HQ handed them out): the kit publishes a PANIC with a position
    70 m from a responder. HQ, the sister and the responder all take test alarms: none of them
    may hear of it; the participant gets one clearly marked training alarm."""
    scene = _hq_scene(api, inbox)
    kit = scene["kit"]
    device = RawDevice(
        api.broker.host, api.broker.port, kit["device_id"], kit["password"], kit["key"]
    )
    try:
        panic = AlarmMessage(
            alarm_id="forged-panic",
            kind=AlarmKind.PANIC,
            ts=utcnow(),
            seq=1,
            position=Position(lat=ALARM_AT[0], lon=ALARM_AT[1], accuracy_m=5, fix_ts=utcnow()),
        )
        assert device.publish("alarm", panic.to_payload()) == "Success"
        wait_until(lambda: "received" in device.stages("forged-panic"))
    finally:
        device.close()

    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            alarm = session.exec(
                select(Alarm).where(
                    Alarm.device_id == kit["device_id"], Alarm.alarm_id == "forged-panic"
                )
            ).one()
            alarm_pk = alarm.id
            assert alarm.kind == "test"

        def deliveries() -> list[Delivery]:
            with Session(engine) as session:
                query = select(Delivery).where(Delivery.alarm_pk == alarm_pk)
                return list(session.exec(query))

        wait_until(lambda: {d.status for d in deliveries()} == {"sent"})
        assert [(d.role, d.kind, d.recipient) for d in deliveries()] == [
            ("participant", "test", scene["name"])
        ]
    finally:
        engine.dispose()
    wait_until(lambda: "/trainee" in _paths(inbox))
    assert _paths(inbox) == ["/trainee"]  # not /hq, /sister or /responder
    (request,) = inbox.requests
    assert json.loads(request.body)["title"].startswith("TEST alarm")


def test_an_integration_token_cannot_tell_which_alarm_or_defender_exists(
    api: ApiHub, inbox: HTTPReceiver
) -> None:
    """Fund requests naming a real defender and alarm, another defender's alarm, a defender or
    an alarm that does not exist: all taken alike. HQ sees what does not hold."""
    with api.client(HQ) as hq:
        ana = _created(hq.post("/v1/defenders", json={"name": "Ana"}))["id"]
        ben = _created(hq.post("/v1/defenders", json={"name": "Ben"}))["id"]
    ana_alarm, ben_alarm = _stored_alarm(api, ana), _stored_alarm(api, ben)
    cases = {
        "fits": (ana, ana_alarm),
        "another defender's alarm": (ana, ben_alarm),
        "no such alarm": (ana, 987654),
        "no such defender": (987654, None),
    }
    body = {"purpose": "security_solutions", "amount": "100.00", "currency": "EUR"}
    made: dict[str, dict[str, Any]] = {}
    with api.client(HQ) as hq:
        hq_made = _created(hq.post("/v1/fund-requests", json=body | {"defender_id": ben}))
    with api.client(INTEGRATION) as thief:
        for case, (defender_id, alarm_id) in cases.items():
            sent = body | {"defender_id": defender_id, "alarm_id": alarm_id}
            made[case] = _created(thief.post("/v1/fund-requests", json=sent))
        of_hq = thief.get(f"/v1/fund-requests/{hq_made['id']}")
        nowhere = thief.get("/v1/fund-requests/987654")
        listed = thief.get("/v1/fund-requests", params={"defender_id": ben}).json()["items"]
        by_alarm = thief.get("/v1/fund-requests", params={"alarm_id": ben_alarm}).json()["items"]

    def shape(answer: dict[str, Any]) -> dict[str, Any]:
        skip = {"id", "defender_id", "alarm_id", "created_at", "updated_at"}
        return {key: value for key, value in answer.items() if key not in skip}

    assert len({json.dumps(shape(answer), sort_keys=True) for answer in made.values()}) == 1
    assert all(answer["reference_problem"] is None for answer in made.values())
    assert _answer(of_hq) == (404, f"no fund request {hq_made['id']}")
    assert _answer(nowhere) == (404, "no fund request 987654")
    assert listed == []  # HQ's request for Ben is not the integration's to see
    assert [item["id"] for item in by_alarm] == [made["another defender's alarm"]["id"]]
    with api.client(HQ) as hq:
        problems = {
            case: hq.get(f"/v1/fund-requests/{answer['id']}").json()["reference_problem"]
            for case, answer in made.items()
        }
        refused = hq.post(
            f"/v1/fund-requests/{made['no such defender']['id']}/transitions",
            json={"state": "under_review"},
        )
        approved = hq.post(
            f"/v1/fund-requests/{made['no such defender']['id']}/transitions",
            json={"state": "approved"},
        )
    assert problems == {
        "fits": None,
        "another defender's alarm": f"alarm {ben_alarm} is not an alarm of defender {ana}",
        "no such alarm": "no alarm 987654",
        "no such defender": "no defender 987654",
    }
    assert refused.status_code == 200
    assert approved.status_code == 409 and approved.json()["code"] == "reference_problem"


def _stored_alarm(api: ApiHub, defender_id: int) -> int:
    from tests.test_api_fund import _alarm

    engine = make_engine(api.database_url)
    try:
        return _alarm(engine, defender_id, f"wb-{uuid.uuid4().hex[:8]}")
    finally:
        engine.dispose()
