"""Defenders' Days on a real hub: events, sessions and registrations over the API; announcements
delivered by the running hub to a real HTTP receiver and a real SMTP server; training wristbands
that log in to the real broker and raise test alarms over MQTT."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from devicekit.protocol import AlarmKind
from hub.db import make_engine
from hub.models import Delivery
from sdk.models import ApiRole
from tests.support.api import ApiHub
from tests.support.brokers import try_connect
from tests.support.device import RawDevice, make_alarm
from tests.support.receivers import HTTPReceiver, SMTPReceiver, wait_until

SECRET = "s3cr3t-pass"


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def json_url(receiver: HTTPReceiver, path: str, auth: str = "") -> str:
    return f"json://{auth}127.0.0.1:{receiver.port}{path}"


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def new_event(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": unique("Defenders' Days"), "starts_on": "2025-05-10", "ends_on": "2025-05-12"}
    return created(client.post("/v1/events", json=body | fields))


def new_defender(client: httpx.Client, name: str, **fields: Any) -> int:
    return int(created(client.post("/v1/defenders", json={"name": name, **fields}))["id"])


def problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail: str = response.json()["detail"]
    return detail


@pytest.fixture(scope="module")
def hq(api: ApiHub) -> Iterator[HTTPReceiver]:
    """HQ's desk for the whole module: an organisation-wide contact, which receives tests."""
    receiver = HTTPReceiver().start()
    with api.client(ApiRole.HQ) as client:
        body = {"name": "HQ desk", "channel_url": json_url(receiver, "/hq")}
        contact = created(client.post("/v1/contacts", json=body))
    assert contact["role"] == "hq" and contact["receives_tests"] is True
    try:
        yield receiver
    finally:
        receiver.stop()


def titles(receiver: HTTPReceiver, path: str) -> list[str]:
    return [json.loads(r.body)["title"] for r in list(receiver.requests) if r.path == path]


# -- events, sessions, registrations --------------------------------------------------------


def test_an_event_with_sessions_round_trip(api: ApiHub) -> None:
    with api.client(ApiRole.INTEGRATION) as client:
        event = new_event(client, location="Tbilisi")
        path = f"/v1/events/{event['id']}"
        created(
            client.post(
                f"{path}/sessions",
                json={
                    "title": "Digital security",
                    "starts_at": "2025-05-11T09:00:00+04:00",
                    "ends_at": "2025-05-11T10:30:00+04:00",
                    "room": "B",
                },
            )
        )
        training = created(
            client.post(
                f"{path}/sessions",
                json={
                    "title": "Your wristband",
                    "kind": "training",
                    "starts_at": "2025-05-10T14:00:00Z",
                    "ends_at": "2025-05-10T15:00:00Z",
                },
            )
        )
        sessions = client.get(f"{path}/sessions").json()
        got = client.get(path).json()

    assert got == event and got["training_active"] is False and got["location"] == "Tbilisi"
    assert [s["title"] for s in sessions] == ["Your wristband", "Digital security"]
    assert sessions[1]["starts_at"] == "2025-05-11T05:00:00Z"
    assert training["kind"] == "training" and training["event_id"] == event["id"]


def test_event_and_session_errors_are_problems(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        backwards = {"name": "X", "starts_on": "2025-05-10", "ends_on": "2025-05-09"}
        assert "before it starts" in problem(client.post("/v1/events", json=backwards), 422)
        assert problem(client.get("/v1/events/987654"), 404) == "no event 987654"
        event = new_event(client)
        sessions = f"/v1/events/{event['id']}/sessions"
        reversed_times = {
            "title": "X",
            "starts_at": "2025-05-10T10:00:00Z",
            "ends_at": "2025-05-10T09:00:00Z",
        }
        outside = reversed_times | {
            "starts_at": "2025-05-13T09:00:00Z",
            "ends_at": "2025-05-13T10:00:00Z",
        }
        assert "end after it starts" in problem(client.post(sessions, json=reversed_times), 422)
        assert "outside the event's days" in problem(client.post(sessions, json=outside), 422)
        bad_kind = outside | {"kind": "party"}
        assert problem(client.post(sessions, json=bad_kind), 422).startswith("invalid fields")
        assert client.get(sessions).json() == []
        assert problem(client.get("/v1/events/987654/sessions"), 404)


def test_events_are_listed_soonest_first_across_pages(api: ApiHub) -> None:
    with api.client(ApiRole.READ_ONLY) as reader, api.client(ApiRole.HQ) as client:
        made = [
            new_event(client, starts_on=day, ends_on=day)["id"]
            for day in ("2031-03-02", "2031-03-01", "2031-03-02", "2031-02-28")
        ]
        seen: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            page = reader.get("/v1/events", params=params).json()
            seen += page["items"]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        forged = reader.get("/v1/events", params={"cursor": "djE6OTk5OTk5"})  # v1:999999

    ours = [item["id"] for item in seen if item["id"] in made]
    assert ours == [made[3], made[1], made[0], made[2]]
    keys = [(item["starts_on"], item["id"]) for item in seen]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert forged.status_code == 400 and forged.json()["code"] == "bad_cursor"


def test_registrations_of_defenders_and_guests_with_their_needs(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client, "Natalia E.", language="ru")
        event = new_event(client)
        registrations = f"/v1/events/{event['id']}/registrations"
        defender = created(
            client.post(
                registrations,
                json={
                    "kind": "defender",
                    "defender_id": defender_id,
                    "channel_url": f"json://natalia:{SECRET}@127.0.0.1:9/inbox",
                    "needs": {
                        "visa_letter": True,
                        "security_considerations": "no photos; followed since March",
                    },
                },
            )
        )
        guest = created(
            client.post(
                registrations,
                json={"kind": "guest", "name": "Journalist", "needs": {"travel_support": True}},
            )
        )
        again = client.post(registrations, json={"kind": "defender", "defender_id": defender_id})
        shown = client.get(f"{registrations}/{defender['id']}").json()
        cancelled = client.delete(f"{registrations}/{guest['id']}")
        listed = client.get(registrations).json()

    assert (defender["name"], defender["language"], defender["status"]) == (
        "Natalia E.",
        "ru",
        "registered",
    )
    assert defender["needs"] == {
        "visa_letter": True,
        "travel_support": False,
        "security_considerations": "no photos; followed since March",
    }
    assert SECRET not in json.dumps(shown) and shown["channel"].startswith("json://***@")
    assert guest["name"] == "Journalist" and guest["channel"] is None
    assert guest["needs"]["travel_support"] is True
    assert "already registered" in problem(again, 409)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert [(r["id"], r["status"]) for r in listed["items"]] == [
        (defender["id"], "registered"),
        (guest["id"], "cancelled"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"kind": "defender", "defender_id": 987654}, 422, "no defender 987654"),
        ({"kind": "defender"}, 422, "needs defender_id"),
        ({"kind": "guest"}, 422, "needs a name"),
        ({"kind": "guest", "name": "G", "channel_url": "nosuch://x"}, 422, "nosuch"),
        ({"kind": "guest", "name": "G", "channel_url": "no url at all"}, 422, "scheme://"),
        ({"kind": "visitor", "name": "G"}, 422, "invalid fields: body.kind"),
        ({"kind": "guest", "name": "G", "needs": {"pets": True}}, 422, "body.needs.pets"),
    ],
)
def test_registration_errors(api: ApiHub, body: dict[str, Any], status: int, detail: str) -> None:
    with api.client(ApiRole.HQ) as client:
        event = new_event(client)
        registrations = f"/v1/events/{event['id']}/registrations"
        assert detail in problem(client.post(registrations, json=body), status)
        assert client.get(registrations).json()["items"] == []


def test_a_registration_is_found_only_in_its_own_event(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        first, second = new_event(client), new_event(client)
        guest = created(
            client.post(
                f"/v1/events/{first['id']}/registrations", json={"kind": "guest", "name": "G"}
            )
        )
        wrong = f"/v1/events/{second['id']}/registrations/{guest['id']}"
        assert problem(client.get(wrong), 404).startswith("no registration")
        assert problem(client.delete(wrong), 404).startswith("no registration")


# -- announcements --------------------------------------------------------------------------


def test_an_announcement_reaches_every_active_registration_through_the_hub(
    api: ApiHub, http_receiver: HTTPReceiver, smtp_server: SMTPReceiver
) -> None:
    with api.client(ApiRole.INTEGRATION) as events, api.client(ApiRole.HQ) as hq_client:
        defender_id = new_defender(hq_client, "Ana Announce")
        event = new_event(events)
        registrations = f"/v1/events/{event['id']}/registrations"
        created(  # only HQ links a registration to a defender
            hq_client.post(
                registrations,
                json={
                    "kind": "defender",
                    "defender_id": defender_id,
                    "channel_url": smtp_server.url("ana@example.org"),
                },
            )
        )
        for name in ("Guest", "Gone"):
            body = {
                "kind": "guest",
                "name": name,
                "channel_url": json_url(http_receiver, f"/{name}"),
            }
            guest = created(events.post(registrations, json=body))
        created(events.post(registrations, json={"kind": "guest", "name": "No channel"}))
        assert events.delete(f"{registrations}/{guest['id']}").status_code == 200

        made = created(
            hq_client.post(
                f"/v1/events/{event['id']}/announcements",
                json={"title": "Room change", "body": "Day 2 moves to room B.\nBring your badge."},
            )
        )
        wait_until(lambda: smtp_server.messages and http_receiver.requests)
        listed = events.get(f"/v1/events/{event['id']}/announcements").json()

    assert made["recipients"] == 2 and made["short"] == "Room change"
    assert made["created_by"] == "api:test-hq"
    assert listed == [made | {"created_by": "hq"}]  # a partner system is not told who wrote it
    (mail,) = smtp_server.messages
    assert mail.rcpt_tos == ["ana@example.org"] and mail.message["Subject"] == "Room change"
    assert mail.text.strip().splitlines() == ["Day 2 moves to room B.", "Bring your badge."]
    (request,) = http_receiver.requests
    assert request.path == "/Guest"
    payload = json.loads(request.body)
    assert (payload["title"], payload["message"]) == (
        "Room change",
        "Day 2 moves to room B.\nBring your badge.",
    )
    # The cancelled registration was never queued: nothing can reach it later.
    rows = _announcement_deliveries(api, made["id"])
    assert sorted(row.recipient for row in rows) == ["Ana Announce", "Guest"]
    wait_until(lambda: {r.status for r in _announcement_deliveries(api, made["id"])} == {"sent"})


def _announcement_deliveries(api: ApiHub, announcement_id: int) -> list[Delivery]:
    engine = make_engine(api.database_url)
    try:
        with Session(engine) as session:
            prefix = f"announcement:{announcement_id}:%"
            return list(session.exec(select(Delivery).where(col(Delivery.key).like(prefix))))
    finally:
        engine.dispose()


def test_announcing_to_an_unknown_event_is_a_404(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        response = client.post("/v1/events/987654/announcements", json={"title": "T", "body": "B"})
    assert problem(response, 404) == "no event 987654"


# -- training -------------------------------------------------------------------------------


def _accepts(api: ApiHub, username: str, password: str) -> bool:
    return try_connect(api.broker.host, api.broker.port, username, password) == 0


def state_of(client: httpx.Client, alarm_id: int) -> str:
    state: str = client.get(f"/v1/alarms/{alarm_id}").json()["state"]
    return state


def test_training_wristbands_raise_test_alarms_that_reach_only_their_participant(
    api: ApiHub, hq: HTTPReceiver, http_receiver: HTTPReceiver
) -> None:
    name = unique("Trainee")
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client, name)
        sister = {
            "name": "Sister",
            "channel_url": json_url(http_receiver, "/sister"),
            "defender_id": defender_id,
            "receives_tests": True,
        }
        assert created(client.post("/v1/contacts", json=sister))["receives_tests"] is True
        event = new_event(client)
        path = f"/v1/events/{event['id']}"
        trainee = {
            "kind": "defender",
            "defender_id": defender_id,
            "channel_url": json_url(http_receiver, "/trainee"),
        }
        registration = created(client.post(f"{path}/registrations", json=trainee))
        guest = created(client.post(f"{path}/registrations", json={"kind": "guest", "name": "G"}))
        off = client.post(f"{path}/training/alarms", json={"registration_id": registration["id"]})
        assert "training is off" in problem(off, 409)

        started = created(client.post(f"{path}/training"))
        (kit,) = started["kits"]
        assert started["active"] is True and kit["registration_id"] == registration["id"]
        assert kit["device_id"] == f"train-{event['id']}-{registration['id']}"
        wait_until(lambda: _accepts(api, kit["device_id"], kit["password"]))
        shown = client.get(f"{path}/training").json()
        assert shown["kits"] == [kit | {"password": None, "key": None}]
        assert created(client.post(f"{path}/training"))["kits"] == [
            kit | {"password": None, "key": None}
        ]
        assert (
            client.get(f"{path}/registrations/{registration['id']}").json()["training_device_id"]
            == kit["device_id"]
        )
        guest_alarm = client.post(f"{path}/training/alarms", json={"registration_id": guest["id"]})
        assert "no training wristband" in problem(guest_alarm, 409)

        # HQ runs one from the API...
        alarm = created(
            client.post(f"{path}/training/alarms", json={"registration_id": registration["id"]})
        )
        assert (alarm["kind"], alarm["device_id"], alarm["defender_id"]) == (
            "test",
            kit["device_id"],
            defender_id,
        )
        # ... and the participant pulls the real wristband: an MQTT publish with the kit's login.
        device = RawDevice(
            api.broker.host, api.broker.port, kit["device_id"], kit["password"], kit["key"]
        )
        try:
            pulled = make_alarm("kit-pull-1", kind=AlarmKind.TEST).to_payload()
            assert device.publish("alarm", pulled) == "Success"
            wait_until(lambda: "received" in device.stages("kit-pull-1"))
        finally:
            device.close()
        from_kit = client.get("/v1/alarms", params={"device_id": kit["device_id"]}).json()
        (pulled_alarm,) = [a for a in from_kit["items"] if a["device_alarm_id"] == "kit-pull-1"]
        assert pulled_alarm["kind"] == "test"

        # "notified": every first-round message has its outcome, so nothing else will arrive.
        wait_until(lambda: state_of(client, alarm["id"]) == "notified")
        wait_until(lambda: state_of(client, pulled_alarm["id"]) == "notified")
        deliveries = client.get(f"/v1/alarms/{alarm['id']}/deliveries").json()

    expected = f"TEST alarm, no action needed: {name}"
    assert titles(http_receiver, "/trainee").count(expected) == 2
    assert titles(hq, "/hq") == []  # neither HQ...
    assert titles(http_receiver, "/sister") == []  # ... nor a contact, even one taking tests
    assert [(d["recipient"], d["kind"]) for d in deliveries] == [(name, "test")]


def test_ending_training_makes_the_kits_logins_fail(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client, api.client(ApiRole.HQ) as hq_client:
        defender_id = new_defender(hq_client, unique("Trainee"))
        event = new_event(client)
        path = f"/v1/events/{event['id']}"
        registration = created(
            client.post(
                f"{path}/registrations", json={"kind": "defender", "defender_id": defender_id}
            )
        )
        (kit,) = created(client.post(f"{path}/training"))["kits"]
        wait_until(lambda: _accepts(api, kit["device_id"], kit["password"]))

        ended = client.delete(f"{path}/training")
        assert ended.status_code == 200, ended.text
        assert ended.json() == {
            "event_id": event["id"],
            "active": False,
            "kits": [kit | {"password": None, "key": None}],
        }
        wait_until(lambda: not _accepts(api, kit["device_id"], kit["password"]))
        late = client.post(f"{path}/training/alarms", json={"registration_id": registration["id"]})
        assert "training is off" in problem(late, 409)
        device = hq_client.get(f"/v1/devices/{kit['device_id']}").json()
        assert device["active"] is False

        (again,) = created(client.post(f"{path}/training"))["kits"]
        assert again["device_id"] == kit["device_id"] and again["password"] != kit["password"]
        wait_until(lambda: _accepts(api, again["device_id"], again["password"]))
        assert not _accepts(api, kit["device_id"], kit["password"])

        assert client.delete(f"{path}/registrations/{registration['id']}").status_code == 200
        wait_until(lambda: not _accepts(api, again["device_id"], again["password"]))
        assert client.get(f"{path}/training").json()["kits"] == []


def test_training_for_an_unknown_event_is_a_404(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        assert problem(client.post("/v1/events/987654/training"), 404) == "no event 987654"
        assert problem(client.get("/v1/events/987654/training"), 404) == "no event 987654"
        body = {"registration_id": 1}
        assert problem(client.post("/v1/events/987654/training/alarms", json=body), 404)


# -- a registration as a recipient: sent, retried, told of the close; stopped when cancelled -----


def _trainee(
    client: httpx.Client, receiver: HTTPReceiver, path: str
) -> tuple[str, dict[str, Any], str]:
    """A defender registered for a new event with ``path`` on ``receiver`` as her channel, and
    training on: the event's path, her registration and her name."""
    name = unique("Trainee")
    defender_id = new_defender(client, name)
    event = new_event(client)
    event_path = f"/v1/events/{event['id']}"
    body = {"kind": "defender", "defender_id": defender_id, "channel_url": json_url(receiver, path)}
    registration = created(client.post(f"{event_path}/registrations", json=body))
    created(client.post(f"{event_path}/training"))
    return event_path, registration, name


def _training_alarm(client: httpx.Client, event_path: str, registration: dict[str, Any]) -> int:
    body = {"registration_id": registration["id"]}
    return int(created(client.post(f"{event_path}/training/alarms", json=body))["id"])


def _statuses(client: httpx.Client, alarm_id: int) -> list[str]:
    return [d["status"] for d in client.get(f"/v1/alarms/{alarm_id}/deliveries").json()]


def test_a_training_alarm_reaches_its_participant_again_after_a_failure_and_tells_her_the_close(
    api: ApiHub, http_receiver: HTTPReceiver
) -> None:
    http_receiver.responses = [(500, b'{"error": "busy"}')]  # her provider fails once
    with api.client(ApiRole.HQ) as client:
        event_path, registration, name = _trainee(client, http_receiver, "/trainee-retried")
        alarm_id = _training_alarm(client, event_path, registration)
        wait_until(lambda: state_of(client, alarm_id) == "notified")  # retried and sent
        resolved = client.post(f"/v1/alarms/{alarm_id}/resolve", json={"note": "drill over"})
        assert resolved.status_code == 200, resolved.text
        wait_until(lambda: set(_statuses(client, alarm_id)) == {"sent"})
        deliveries = client.get(f"/v1/alarms/{alarm_id}/deliveries").json()

    assert [(d["recipient"], d["kind"], d["attempts"]) for d in deliveries] == [
        (name, "test", 2),
        (name, "resolved", 1),
    ]
    assert titles(http_receiver, "/trainee-retried") == [
        f"TEST alarm, no action needed: {name}",  # refused by her provider
        f"TEST alarm, no action needed: {name}",
        f"Alarm closed: {name}",
    ]


def test_a_cancelled_registration_gets_no_more_training_alarm_messages(
    api: ApiHub, http_receiver: HTTPReceiver
) -> None:
    http_receiver.default = (500, b'{"error": "down"}')  # every send fails: it would be retried
    with api.client(ApiRole.HQ) as client:
        event_path, registration, _ = _trainee(client, http_receiver, "/trainee-cancelled")
        alarm_id = _training_alarm(client, event_path, registration)
        wait_until(lambda: "retrying" in _statuses(client, alarm_id))
        gone = client.delete(f"{event_path}/registrations/{registration['id']}")
        assert gone.status_code == 200, gone.text
        # Cancelled at once, or (if a retry was already under way) as soon as it fails.
        wait_until(lambda: _statuses(client, alarm_id) == ["cancelled"])
        deliveries = client.get(f"/v1/alarms/{alarm_id}/deliveries").json()
        resolved = client.post(f"/v1/alarms/{alarm_id}/resolve", json={"note": "drill over"})
        assert resolved.status_code == 200, resolved.text
        after_close = client.get(f"/v1/alarms/{alarm_id}/deliveries").json()

    assert "the registration was cancelled" in deliveries[0]["detail"]
    assert after_close == deliveries  # not even the close is sent to her
    assert len(titles(http_receiver, "/trainee-cancelled")) <= 2  # the first try, one under way


def test_announcements_queued_for_a_registration_stop_when_it_is_cancelled(
    api: ApiHub, http_receiver: HTTPReceiver
) -> None:
    http_receiver.default = (500, b'{"error": "down"}')
    with api.client(ApiRole.HQ) as client:
        event = new_event(client)
        path = f"/v1/events/{event['id']}"
        body = {"kind": "guest", "name": "Guest", "channel_url": json_url(http_receiver, "/g")}
        guest = created(client.post(f"{path}/registrations", json=body))
        made = created(client.post(f"{path}/announcements", json={"title": "Bus", "body": "9:00"}))

        def statuses() -> list[str]:
            return [row.status for row in _announcement_deliveries(api, made["id"])]

        wait_until(lambda: statuses() == ["retrying"])
        assert client.delete(f"{path}/registrations/{guest['id']}").status_code == 200
        wait_until(lambda: statuses() == ["cancelled"])

    (row,) = _announcement_deliveries(api, made["id"])
    assert row.registration_id == guest["id"] and "registration was cancelled" in row.detail
    assert len(titles(http_receiver, "/g")) <= 2  # the first try, one under way
