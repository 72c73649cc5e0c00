"""Alarms through the API of a real hub: alarms come from wristbands over MQTT, HQ acts on them
over HTTP, and the hub really sends what the actions queue (to a real HTTP receiver).

The SQLite hub is shared by the module (every test makes its own defenders and devices); the
last test runs the same flows on a hub on PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devicekit.protocol import AlarmKind
from sdk.models import ApiRole
from tests.support.api import ApiHub, api_hub, new_defender, unique, walk
from tests.support.brokers import try_connect
from tests.support.device import RawDevice, make_alarm
from tests.support.receivers import HTTPReceiver, wait_until

HQ_ACTOR = "api:test-hq"


class Wristband:
    """A registered device (through the API) publishing real alarms to the hub's broker."""

    def __init__(self, api: ApiHub, client: httpx.Client, defender_id: int) -> None:
        self.device_id = unique("wb")
        made = client.post("/v1/devices", json={"id": self.device_id, "defender_id": defender_id})
        assert made.status_code == 201, made.text
        password = made.json()["password"]
        broker = api.broker
        wait_until(lambda: try_connect(broker.host, broker.port, self.device_id, password) == 0)
        self.raw = RawDevice(broker.host, broker.port, self.device_id, password, made.json()["key"])
        self._seq = itertools.count(1)

    def alarm(self, client: httpx.Client, kind: AlarmKind = AlarmKind.PANIC) -> dict[str, Any]:
        """Publish an alarm and return it as the API shows it once the hub stored it."""
        alarm_id = unique("alarm")
        payload = make_alarm(alarm_id, seq=next(self._seq), kind=kind).to_payload()
        assert self.raw.publish("alarm", payload) == "Success"

        def stored() -> dict[str, Any] | None:
            items = client.get("/v1/alarms", params={"device_id": self.device_id}).json()["items"]
            return next((a for a in items if a["device_alarm_id"] == alarm_id), None)

        found: dict[str, Any] = wait_until(stored)
        return found

    def stages(self, alarm: dict[str, Any]) -> list[str]:
        return self.raw.stages(alarm["device_alarm_id"])


WristbandFactory = Callable[[ApiHub, httpx.Client, int], Wristband]


@pytest.fixture
def wristbands() -> Iterator[WristbandFactory]:
    made: list[Wristband] = []

    def make(api: ApiHub, client: httpx.Client, defender_id: int) -> Wristband:
        made.append(Wristband(api, client, defender_id))
        return made[-1]

    yield make
    for wristband in made:
        wristband.raw.close()


def posted_to(receiver: HTTPReceiver, path: str) -> int:
    return sum(1 for request in receiver.requests if request.path == path)


def all_sent(client: httpx.Client, alarm_pk: int, count: int) -> list[dict[str, Any]] | None:
    rows: list[dict[str, Any]] = client.get(f"/v1/alarms/{alarm_pk}/deliveries").json()
    return rows if len(rows) == count and {r["status"] for r in rows} == {"sent"} else None


# -- the flows (also run on PostgreSQL) ----------------------------------------------------------


def hq_actions_flow(api: ApiHub, receiver: HTTPReceiver, wristbands: WristbandFactory) -> None:
    """Acknowledge, verify, escalate and resolve an alarm that came from a wristband."""
    policy = unique("two-stage")
    document = {
        "stages": [
            {"name": "first", "roles": ["trusted"]},
            {"name": "later", "roles": ["partner"], "delay_s": 3600},
        ]
    }
    with api.client(ApiRole.ADMIN) as admin:
        assert admin.put(f"/v1/policies/{policy}", json={"document": document}).status_code == 200
    with api.client(ApiRole.HQ) as hq:
        defender_id = new_defender(hq)
        assert hq.patch(f"/v1/defenders/{defender_id}", json={"policy": policy}).status_code == 200
        for name, role in (("trusted", "trusted"), ("partner", "partner")):
            url = f"json://127.0.0.1:{receiver.port}/{name}"
            body = {"name": name, "channel_url": url, "defender_id": defender_id, "role": role}
            assert hq.post("/v1/contacts", json=body).status_code == 201
        wristband = wristbands(api, hq, defender_id)
        alarm = wristband.alarm(hq)
        pk = alarm["id"]
        assert alarm["ref"] == f"A{pk}" and alarm["device_id"] == wristband.device_id
        wait_until(lambda: "notified" in wristband.stages(alarm))
        assert posted_to(receiver, "/trusted") == 1 and posted_to(receiver, "/partner") == 0

        acked = hq.post(f"/v1/alarms/{pk}/acknowledge", json={"note": "Calling her sister"})
        assert acked.status_code == 200, acked.text
        assert acked.json()["state"] == "acknowledged" and acked.json()["acknowledged_at"]
        wait_until(lambda: "responder_coming" in wristband.stages(alarm))

        verified = hq.post(f"/v1/alarms/{pk}/verify").json()
        assert verified["state"] == "verified" and verified["verified_at"]

        escalated = hq.post(f"/v1/alarms/{pk}/escalate").json()
        assert escalated["queued"] == 1 and escalated["alarm"]["state"] == "verified"
        wait_until(lambda: posted_to(receiver, "/partner") == 1)
        assert hq.post(f"/v1/alarms/{pk}/escalate").json()["queued"] == 0

        resolved = hq.post(f"/v1/alarms/{pk}/resolve", json={"note": "She is safe"}).json()
        assert resolved["state"] == "resolved" and resolved["closed_at"]
        wait_until(lambda: "resolved" in wristband.stages(alarm))
        wait_until(lambda: posted_to(receiver, "/trusted") == 2)
        wait_until(lambda: posted_to(receiver, "/partner") == 2)

        for action in ("resolve", "false-alarm", "acknowledge", "verify", "escalate"):
            refused = hq.post(f"/v1/alarms/{pk}/{action}")
            assert refused.status_code == 409, action
            assert refused.json()["code"] == "conflict"
            assert f"A{pk}" in refused.json()["detail"]

        timeline = hq.get(f"/v1/alarms/{pk}/events").json()
        by_hq = [(e["kind"], e["detail"]) for e in timeline if e["actor"] == HQ_ACTOR]
        assert by_hq == [
            ("acknowledged", f"{HQ_ACTOR} is on it"),
            ("note", "Calling her sister"),
            ("verified", "verified by HQ"),
            ("escalated", "escalated by HQ"),
            ("escalated", "escalated by HQ"),
            ("resolved", f"resolved by {HQ_ACTOR}"),
            ("note", "She is safe"),
        ]
        assert [e["id"] for e in timeline] == sorted(e["id"] for e in timeline)
        assert {e["alarm_ref"] for e in timeline} == {f"A{pk}"}

        deliveries = wait_until(lambda: all_sent(hq, pk, 4))
        assert [(d["kind"], d["recipient"]) for d in deliveries] == [
            ("alarm", "trusted"),
            ("alarm", "partner"),
            ("resolved", "trusted"),
            ("resolved", "partner"),
        ]
        assert all("body" not in d for d in deliveries)
        resolved_rows = hq.get(
            "/v1/deliveries", params={"alarm_id": pk, "kind": "resolved", "status": "sent"}
        ).json()["items"]
        assert [d["id"] for d in resolved_rows] == [deliveries[3]["id"], deliveries[2]["id"]]

        feed = walk(hq, "/v1/alarm-events", 2, alarm_id=pk)
        assert feed == timeline
        after = walk(hq, "/v1/alarm-events", 50, alarm_id=pk, after=timeline[2]["id"])
        assert after == timeline[3:]


def rejected_flow(api: ApiHub, wristbands: WristbandFactory) -> None:
    """A message the hub refused is listed for HQ (without its payload) and can be reviewed."""
    with api.client(ApiRole.HQ) as hq:
        wristband = wristbands(api, hq, new_defender(hq))
        garbage = b'{"note": "59.3326,18.0649",}'  # signed, but not JSON: refused, kept whole
        assert wristband.raw.publish("alarm", garbage) == "Success"
        unsigned = make_alarm(unique("forged")).to_payload()  # refused before it is parsed
        assert wristband.raw.publish("alarm", unsigned, signed=False) == "Success"

        def refused() -> dict[str, Any] | None:
            items = walk(hq, "/v1/rejected-messages", 50, reviewed=False)
            mine = [r for r in items if r["device_id"] == wristband.device_id]
            return next((r for r in mine if not r["suspicious"]), None)

        message = wait_until(refused)
        assert message["channel"] == "alarm" and message["reviewed_at"] is None
        signed_size = len(garbage) + len(',"sig":""') + 64
        assert message["payload_size"] == signed_size and "Invalid JSON" in message["reason"]
        assert message["suspicious"] is False

        def suspicious() -> list[dict[str, Any]]:
            items = walk(hq, "/v1/rejected-messages", 50, suspicious=True)
            return [r for r in items if r["device_id"] == wristband.device_id]

        [forged] = wait_until(suspicious)
        assert forged["payload_size"] == len(unsigned) and "unsigned" in forged["reason"]
        assert "59.33" not in str(message) and "payload" not in message
        reviewed = hq.post(f"/v1/rejected-messages/{message['id']}/review")
        assert reviewed.status_code == 200 and reviewed.json()["reviewed_at"]
        again = hq.post(f"/v1/rejected-messages/{message['id']}/review").json()
        assert again["reviewed_at"] == reviewed.json()["reviewed_at"]
        hq.post(f"/v1/rejected-messages/{forged['id']}/review")
        assert refused() is None
        done = walk(hq, "/v1/rejected-messages", 50, reviewed=True)
        assert message["id"] in {r["id"] for r in done}
        assert hq.post("/v1/rejected-messages/999999/review").status_code == 404
    with api.client(ApiRole.READ_ONLY) as reader:
        assert reader.post(f"/v1/rejected-messages/{message['id']}/review").status_code == 403


# -- SQLite (the module's hub) -------------------------------------------------------------------


def test_hq_actions_change_the_state_show_in_the_timeline_and_are_sent(
    api: ApiHub, http_receiver: HTTPReceiver, wristbands: WristbandFactory
) -> None:
    hq_actions_flow(api, http_receiver, wristbands)


def test_rejected_messages_are_listed_and_reviewed(
    api: ApiHub, wristbands: WristbandFactory
) -> None:
    rejected_flow(api, wristbands)


def test_a_false_alarm_needs_no_body_and_tells_the_wristband(
    api: ApiHub, wristbands: WristbandFactory
) -> None:
    with api.client(ApiRole.HQ) as hq:
        wristband = wristbands(api, hq, new_defender(hq))
        alarm = wristband.alarm(hq)
        closed = hq.post(f"/v1/alarms/{alarm['id']}/false-alarm")
        timeline = hq.get(f"/v1/alarms/{alarm['id']}/events").json()
    assert closed.status_code == 200 and closed.json()["state"] == "false_alarm"
    assert ("false_alarm", HQ_ACTOR) in [(e["kind"], e["actor"]) for e in timeline]
    assert "note" not in [e["kind"] for e in timeline]
    wait_until(lambda: "resolved" in wristband.stages(alarm))


def test_alarms_are_filtered_and_paged_newest_first(
    api: ApiHub, wristbands: WristbandFactory
) -> None:
    with api.client(ApiRole.HQ) as hq:
        mine, other = new_defender(hq), new_defender(hq)
        first_band, second_band = wristbands(api, hq, mine), wristbands(api, hq, mine)
        theirs = wristbands(api, hq, other)
        panic = first_band.alarm(hq)
        test = first_band.alarm(hq, AlarmKind.TEST)
        fall = second_band.alarm(hq, AlarmKind.FALL)
        elsewhere = theirs.alarm(hq)
        assert hq.post(f"/v1/alarms/{panic['id']}/resolve").status_code == 200

        def ids(**params: Any) -> list[int]:
            return [a["id"] for a in walk(hq, "/v1/alarms", 1, **params)]

        assert ids(defender_id=mine) == [fall["id"], test["id"], panic["id"]]
        assert ids(defender_id=other) == [elsewhere["id"]]
        assert ids(device_id=first_band.device_id) == [test["id"], panic["id"]]
        assert ids(defender_id=mine, kind="test") == [test["id"]]
        assert ids(defender_id=mine, state="resolved") == [panic["id"]]
        open_ones = ids(defender_id=mine, state=["received", "notified"])
        assert open_ones == [fall["id"], test["id"]]
        assert ids(defender_id=mine, since=test["received_at"]) == [fall["id"], test["id"]]
        assert ids(defender_id=mine, until=test["received_at"]) == [panic["id"]]
        between = ids(defender_id=mine, since=test["received_at"], until=fall["received_at"])
        assert between == [test["id"]]
        naive = test["received_at"].removesuffix("Z")
        assert ids(defender_id=mine, since=naive) == [fall["id"], test["id"]]
        newest = hq.get("/v1/alarms", params={"limit": 2}).json()
        assert [a["id"] for a in newest["items"]] == [elsewhere["id"], fall["id"]]
        assert newest["next_cursor"]
        one = hq.get(f"/v1/alarms/{fall['id']}").json()
        assert one == fall | {"state": one["state"]}
        assert one["position"] == {
            "lat": 43.3178,
            "lon": 45.6982,
            "accuracy_m": 12.0,
            "fix_ts": one["position"]["fix_ts"],
        }


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"state": ["received", "on_fire"]}, ["query", "state", 1]),
        ({"kind": "earthquake"}, ["query", "kind"]),
        ({"since": "yesterday"}, ["query", "since"]),
        ({"defender_id": "one"}, ["query", "defender_id"]),
        ({"limit": 0}, ["query", "limit"]),
    ],
)
def test_bad_alarm_filters_are_422(api: ApiHub, params: dict[str, Any], loc: list[Any]) -> None:
    with api.client(ApiRole.READ_ONLY) as reader:
        response = reader.get("/v1/alarms", params=params)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == [loc]


def test_a_time_window_must_end_after_it_starts_in_utc(api: ApiHub) -> None:
    window = {"since": "2025-05-02T00:00:00Z", "until": "2025-05-01T00:00:00Z"}
    with api.client(ApiRole.READ_ONLY) as reader:
        backwards = reader.get("/v1/alarms", params=window)
        before_year_one = reader.get("/v1/alarms", params={"since": "0001-01-01T00:00:00+14:00"})
    assert backwards.status_code == 422
    assert backwards.json()["detail"] == "since must be before until"
    assert before_year_one.status_code == 422 and "out of range" in before_year_one.json()["detail"]


def test_unknown_alarms_are_404_for_reads_and_actions(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as hq:
        for path in ("", "/events", "/deliveries"):
            response = hq.get(f"/v1/alarms/999999{path}")
            assert response.status_code == 404 and response.json()["detail"] == "no alarm 999999"
        for action in ("acknowledge", "verify", "escalate", "resolve", "false-alarm"):
            response = hq.post(f"/v1/alarms/999999/{action}", json={"note": "x"})
            assert response.status_code == 404, action
        assert hq.get("/v1/alarms/A12").status_code == 422


def test_action_bodies_and_roles_are_checked(api: ApiHub, wristbands: WristbandFactory) -> None:
    with api.client(ApiRole.HQ) as hq:
        alarm = wristbands(api, hq, new_defender(hq)).alarm(hq)
        path = f"/v1/alarms/{alarm['id']}/acknowledge"
        unknown_field = hq.post(path, json={"note": "x", "by": "someone else"})
        too_long = hq.post(path, json={"note": "x" * 2001})
        state = hq.get(f"/v1/alarms/{alarm['id']}").json()["state"]
    with api.client(ApiRole.READ_ONLY) as reader:
        forbidden = reader.post(path)
        readable = reader.get(f"/v1/alarms/{alarm['id']}/events")
    with api.client(ApiRole.INTEGRATION) as integration:
        hidden = integration.get("/v1/alarms")
    assert unknown_field.status_code == 422 and too_long.status_code == 422
    assert state != "acknowledged"
    assert forbidden.status_code == 403 and readable.status_code == 200
    assert hidden.status_code == 403


def test_delivery_filters_are_checked(api: ApiHub) -> None:
    with api.client(ApiRole.READ_ONLY) as reader:
        bad = reader.get("/v1/deliveries", params={"status": "lost"})
        none = reader.get("/v1/deliveries", params={"alarm_id": 999999})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "status"]
    assert none.status_code == 200 and none.json() == {"items": [], "next_cursor": None}


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_same_endpoints_work_on_postgresql(
    database_url: str,
    tmp_path: Path,
    http_receiver: HTTPReceiver,
    wristbands: WristbandFactory,
) -> None:
    with api_hub(tmp_path, database_url=database_url) as hub:
        hq_actions_flow(hub, http_receiver, wristbands)
        rejected_flow(hub, wristbands)
        with hub.client(ApiRole.HQ) as hq:
            defender_id = new_defender(hq)
            band = wristbands(hub, hq, defender_id)
            first, second = band.alarm(hq), band.alarm(hq, AlarmKind.TEST)
            window = {"defender_id": defender_id, "since": second["received_at"]}
            assert [a["id"] for a in walk(hq, "/v1/alarms", 1, **window)] == [second["id"]]
            window = {"defender_id": defender_id, "until": second["received_at"]}
            assert [a["id"] for a in walk(hq, "/v1/alarms", 1, **window)] == [first["id"]]
            devices = walk(hq, "/v1/devices", 1, defender_id=defender_id)
            assert [d["id"] for d in devices] == [band.device_id]
        with hub.client(ApiRole.ADMIN) as admin:
            policies = walk(admin, "/v1/policies", 1)
            assert policies[0]["name"] == "default" and len(policies) == 2
