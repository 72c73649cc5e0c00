"""Alarm context and escalation, rule by rule: a real broker, real SMTP and HTTP receivers, the
real hub, and a fake clock so minutes pass without sleeping."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from devicekit.protocol import AlarmKind, Cancel, Heartbeat, Location, Position, utcnow
from hub.models import Role
from tests.support.receivers import wait_until
from tests.support.scene import STAGED_POLICY as POLICY
from tests.support.scene import Scene


@pytest.fixture
def scene(broker, smtp_server, http_receiver, tmp_path) -> Iterator[Scene]:
    stage = Scene(
        broker, f"sqlite:///{tmp_path / 'natalia.db'}", smtp_server, http_receiver, tmp_path
    )
    stage.policy(POLICY)
    stage.contact("HQ", "hq@example.org", role=Role.HQ)
    stage.contact("Sister", "sister@example.org")
    stage.contact("Partner NGO", "partner@example.org", role=Role.PARTNER, org=True)
    stage.contact(
        "Public X", role=Role.PUBLIC, org=True, url=f"json://127.0.0.1:{http_receiver.port}/public"
    )
    try:
        yield stage
    finally:
        stage.close()


def ack_link(scene: Scene, address: str) -> str:
    mail = next(m for m in scene.smtp.messages if address in m.rcpt_tos)
    line = next(line for line in mail.text.splitlines() if "/ack/" in line)
    return line[line.index("http") :].strip()


def test_first_stage_at_once_second_only_after_its_delay(scene: Scene) -> None:
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    assert scene.mails_to("sister@example.org") and scene.mails_to("hq@example.org")
    scene.advance(599)
    assert scene.mails_to("partner@example.org") == []
    scene.advance(1)
    assert len(scene.mails_to("partner@example.org")) == 1
    assert "stage" in scene.events(alarm)


def test_unacknowledged_stage_is_skipped_once_someone_is_on_it(scene: Scene) -> None:
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    scene.actions.acknowledge(f"A{alarm.id}", "Sister")
    scene.advance(600)
    assert scene.mails_to("partner@example.org") == []
    assert "stage_skipped" in scene.events(alarm)


def test_public_stage_waits_for_hq_verification(scene: Scene) -> None:
    scene.defender(allow_public_broadcast=True)
    scene.start()
    alarm = scene.alarm()
    scene.advance(24 * 3600)
    assert [r.path for r in scene.http.requests] == []
    scene.actions.verify(f"A{alarm.id}", "duty officer")
    scene.settle()
    [post] = scene.http.requests
    assert post.path == "/public"
    body = json.loads(post.body)
    assert "Natalia Test" in body["message"] and "wb-1" not in body["message"]
    assert scene.fresh(alarm).state == "verified"


def test_public_broadcast_is_refused_when_the_defender_does_not_allow_it(scene: Scene) -> None:
    scene.start()  # allow_public_broadcast is off by default
    alarm = scene.alarm()
    scene.actions.verify(f"A{alarm.id}", "duty officer")
    scene.advance(60)
    assert scene.http.requests == []
    assert "public_refused" in scene.events(alarm)


def test_reminders_repeat_until_the_recipient_acknowledges_by_link(scene: Scene) -> None:
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    scene.advance(300)
    assert len(scene.mails_to("sister@example.org")) == 2  # alarm + first reminder
    link = ack_link(scene, "sister@example.org")
    page = httpx.get(link)  # a link preview must not acknowledge
    assert page.status_code == 200 and "I'm on it" in page.text
    assert scene.fresh(alarm).acknowledged_at is None
    assert httpx.post(link).status_code == 200
    assert scene.fresh(alarm).state == "acknowledged"
    scene.advance(300)
    scene.advance(300)
    assert len(scene.mails_to("sister@example.org")) == 2  # no more reminders for her
    assert len(scene.mails_to("hq@example.org")) >= 4  # HQ did not acknowledge: reminded
    assert alarm.id is not None
    [event] = [e for e in scene.store.events(alarm.id) if e.kind == "acknowledged"]
    assert event.actor == "Sister"
    assert "responder_coming" in scene.stages("al-1")


def test_failed_channel_falls_back_to_the_next(scene: Scene) -> None:
    # 404: a retry cannot fix it, so at once (retries of a 500: tests/test_retries.py)
    scene.http.default = (404, b'{"error": "no such number"}')
    scene.contact(
        "Brother",
        url=f"json://127.0.0.1:{scene.http.port}/sms",
        fallback_urls=[scene.smtp.url("brother@example.org")],
    )
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    rows = scene.deliveries(alarm, "Brother")
    assert [(r.channel_index, r.status) for r in rows] == [(0, "failed"), (1, "sent")]
    assert len(scene.mails_to("brother@example.org")) == 1


def test_silent_device_is_reported_after_interval_plus_grace(scene: Scene) -> None:
    scene.start()
    beat = Heartbeat(ts=utcnow(), seq=1, interval_s=60, battery=80)
    scene.publish("heartbeat", beat.to_payload())
    wait_until(lambda: scene.store.engine and _device(scene).heartbeat_interval_s == 60)
    scene.advance(60 + 120 - 1)  # default grace: 120 s
    assert not any("wb-1" in s for s in scene.mails_to("hq@example.org"))
    scene.advance(2)
    [subject] = scene.mails_to("hq@example.org")
    assert "wb-1" in subject or "Natalia Test" in subject
    assert _device(scene).silent_since is not None


def test_silent_device_during_an_alarm_escalates_at_once(scene: Scene) -> None:
    scene.start()
    scene.publish("heartbeat", Heartbeat(ts=utcnow(), seq=1, interval_s=60).to_payload())
    alarm = scene.alarm()
    scene.settle()
    scene.advance(181)
    assert len(scene.mails_to("partner@example.org")) == 1  # 600 s stage ran early
    assert "escalated" in scene.events(alarm)


def test_cancel_with_the_right_code_closes_the_alarm_and_tells_everyone(scene: Scene) -> None:
    scene.defender(cancel_code="4711", duress_code="9999")
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    scene.publish("cancel", Cancel(alarm_id="al-1", ts=utcnow(), seq=9, code="4711").to_payload())
    wait_until(lambda: "cancelled" in scene.stages("al-1"))
    scene.settle()
    assert scene.fresh(alarm).state == "cancelled"
    assert len(scene.mails_to("sister@example.org")) == 2  # the alarm, then "cancelled"
    scene.advance(600)
    assert scene.mails_to("partner@example.org") == []


def test_duress_code_looks_like_a_cancel_but_escalates(scene: Scene) -> None:
    scene.defender(cancel_code="4711", duress_code="9999")
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    scene.publish("cancel", Cancel(alarm_id="al-1", ts=utcnow(), seq=9, code="9999").to_payload())
    wait_until(lambda: "cancelled" in scene.stages("al-1"))  # identical to the device
    scene.settle()
    stored = scene.fresh(alarm)
    assert stored.duress and stored.state != "cancelled"
    assert len(scene.mails_to("partner@example.org")) == 1  # escalated at once
    assert any("DURESS" in s.upper() for s in scene.mails_to("hq@example.org"))
    # Everyone else is told what a real cancel tells them (tests/test_duress.py compares).
    assert scene.mails_to("sister@example.org")[-1].startswith("Alarm cancelled")


def test_wrong_code_changes_nothing_and_is_shown_to_hq(scene: Scene) -> None:
    scene.defender(cancel_code="4711", duress_code="9999")
    scene.start()
    alarm = scene.alarm()
    scene.publish("cancel", Cancel(alarm_id="al-1", ts=utcnow(), seq=9, code="0000").to_payload())
    wait_until(lambda: "cancel_refused" in scene.events(alarm))
    assert "cancelled" not in scene.stages("al-1")
    assert scene.fresh(alarm).state in ("received", "notified")


def test_test_alarm_reaches_only_recipients_marked_for_tests(scene: Scene) -> None:
    scene.contact("Volunteer", "volunteer@example.org", receives_tests=True)
    scene.start()
    alarm = scene.alarm("drill-1", kind=AlarmKind.TEST)
    scene.settle()
    assert {d.recipient for d in scene.deliveries(alarm)} == {"HQ", "Volunteer"}
    assert scene.mails_to("sister@example.org") == []
    assert "TEST" in scene.mails_to("volunteer@example.org")[0].upper()


def test_location_updates_go_to_those_who_acknowledged(scene: Scene) -> None:
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    scene.actions.acknowledge(f"A{alarm.id}", "HQ")
    link = ack_link(scene, "sister@example.org")
    httpx.post(link)
    where = Position(lat=43.32, lon=45.70, accuracy_m=6, fix_ts=utcnow())
    scene.publish(
        "location", Location(alarm_id="al-1", ts=utcnow(), seq=20, position=where).to_payload()
    )
    wait_until(lambda: any(d.kind == "location_update" for d in scene.deliveries(alarm)))
    scene.settle()
    updates = [d.recipient for d in scene.deliveries(alarm) if d.kind == "location_update"]
    assert updates == ["Sister"]  # HQ acknowledged from the CLI, not as a recipient


def test_hq_resolves_and_the_device_hears_it(scene: Scene) -> None:
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    scene.actions.resolve(f"A{alarm.id}", "duty officer")
    scene.advance(1)
    assert "resolved" in scene.stages("al-1")
    assert scene.fresh(alarm).state == "resolved"
    scene.advance(600)
    assert scene.mails_to("partner@example.org") == []


def _device(scene: Scene):
    from sqlmodel import Session

    from hub.models import Device

    with Session(scene.store.engine) as session:
        device = session.get(Device, "wb-1")
        assert device is not None
        return device


NEARBY_POLICY = """
[[stages]]
name = "first"
roles = ["hq", "trusted", "nearby"]
"""


def _owntracks(broker, user: str, password: str, lat: float, lon: float, tst: int) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    app = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311)
    app.username_pw_set(user, password)
    app.connect(broker.host, broker.port)
    app.loop_start()
    payload = {
        "_type": "location",
        "lat": lat,
        "lon": lon,
        "tst": tst,
        "acc": 12,
        "batt": 80,
        "tid": user[:2],
        "conn": "m",
        "t": "u",
    }
    app.publish(f"owntracks/{user}/phone", json.dumps(payload), qos=1).wait_for_publish(5)
    app.disconnect()
    app.loop_stop()


def test_nearest_responders_from_owntracks_positions_are_told_with_distance(scene: Scene) -> None:
    from hub.responders import add_responder_with_account

    scene.policy(NEARBY_POLICY)
    data_dir = scene.broker.process.settings.data_dir
    accounts = {}
    for user, radius in (
        ("near", 5000.0),
        ("nearer", 5000.0),
        ("far", 5000.0),
        ("stale", 5000.0),
        ("small-radius", 500.0),
    ):
        creds = add_responder_with_account(
            scene.store.engine,
            user.title(),
            scene.smtp.url(f"{user}@example.org"),
            radius,
            user,
            data_dir,
        )
        accounts[user] = scene.broker.add_account(user, creds.password)
    scene.start()
    now = int(scene.clock.now().timestamp())
    # The alarm is at 43.3178, 45.6982 (tests.support.device.make_alarm).
    _owntracks(scene.broker, "near", accounts["near"], 43.3358, 45.6982, now)  # ~2.0 km
    _owntracks(scene.broker, "nearer", accounts["nearer"], 43.3268, 45.6982, now)  # ~1.0 km
    _owntracks(scene.broker, "far", accounts["far"], 43.5000, 45.6982, now)  # ~20 km
    _owntracks(scene.broker, "stale", accounts["stale"], 43.3188, 45.6982, now - 7200)
    _owntracks(scene.broker, "small-radius", accounts["small-radius"], 43.3268, 45.6982, now)
    wait_until(lambda: sum(r.position_at is not None for r in _responders(scene)) == 5)
    alarm = scene.alarm()
    scene.settle()
    nearby = [d.recipient for d in scene.deliveries(alarm) if d.kind == "alarm_nearby"]
    assert nearby == ["Nearer", "Near"]  # nearest first; far, stale and out-of-radius left out
    [mail] = [m for m in scene.smtp.messages if "nearer@example.org" in m.rcpt_tos]
    assert "1.0 km" in mail.text and "openstreetmap.org" in mail.text


def _responders(scene: Scene):
    from hub.responders import list_responders

    return list_responders(scene.store.engine)


def test_the_example_policy_file_is_valid_and_matches_the_built_in_default() -> None:
    from pathlib import Path

    from hub.escalation import DEFAULT_POLICY, load_policy_file

    example = Path(__file__).resolve().parents[1] / "examples/operator/policy.toml"
    assert load_policy_file(example) == DEFAULT_POLICY


def test_low_battery_is_reported_to_hq_once(scene: Scene) -> None:
    scene.start()
    for seq, battery in ((1, 40), (2, 12), (3, 11)):
        beat = Heartbeat(ts=utcnow(), seq=seq, interval_s=600, battery=battery)
        scene.publish("heartbeat", beat.to_payload())
    wait_until(lambda: _device(scene).battery == 11)
    scene.settle()
    reports = [d for d in scene.store.deliveries() if d.kind == "low_battery"]
    assert [d.recipient for d in reports] == ["HQ"]
    assert "12%" in reports[0].body or "12 %" in reports[0].body


def test_broker_last_will_reports_the_wristband_offline(scene: Scene, tmp_path) -> None:
    from devicekit.wristband import Wristband

    scene.start(device=False)  # the wristband itself is wb-1 here
    wristband = Wristband(
        "wb-1",
        scene.device_password,
        key=scene.device_key,
        host=scene.broker.host,
        port=scene.broker.port,
        state_dir=tmp_path / "wb",
        keepalive=5,
    )
    wristband.start()
    wristband.wait_connected()
    wait_until(lambda: _device(scene).online is True)
    sock = wristband._client.socket()
    assert sock is not None
    sock.close()  # the phone network drops: no DISCONNECT is sent
    wait_until(lambda: _device(scene).online is False, timeout=20)
    scene.settle()
    [report] = [d for d in scene.store.deliveries() if d.kind == "device_offline"]
    assert report.recipient == "HQ" and "wb-1" in report.body
    wristband.stop()


def test_link_of_a_closed_alarm_says_so_and_acknowledges_nothing(scene: Scene) -> None:
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    link = ack_link(scene, "sister@example.org")
    scene.actions.resolve(f"A{alarm.id}", "duty officer")
    answer = httpx.post(link)
    assert answer.status_code == 200 and "already closed (resolved)" in answer.text
    assert scene.fresh(alarm).acknowledged_at is None
    assert httpx.post(link.replace("/ack/", "/ack/x")).status_code == 404
