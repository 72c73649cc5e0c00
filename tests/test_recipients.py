"""Who may still receive: a contact deactivated during an alarm gets nothing more, and press and
public channels get only the public texts — real broker, SMTP and HTTP receivers, the real hub
and its web server, a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlmodel import Session

from devicekit.protocol import Location, Position, utcnow
from hub import admin
from hub.codes import new_token
from hub.escalation import PolicyError, parse_policy
from hub.models import Alarm, Contact, Delivery, EscalationPolicy, Role
from tests.support.receivers import wait_until
from tests.support.scene import Scene

POLICY = """
[[stages]]
name = "first"
roles = ["hq", "trusted"]
reminder_interval_s = 300
"""


@pytest.fixture
def scene(broker, smtp_server, http_receiver, tmp_path) -> Iterator[Scene]:
    stage = Scene.with_hq(broker, smtp_server, http_receiver, tmp_path, POLICY)
    try:
        yield stage
    finally:
        stage.close()


def set_active_in_database(scene: Scene, contact_id: int, active: bool) -> None:
    """What any path that deactivates a contact leaves behind: the row says inactive (the API's
    PATCH did only this before). The hub must act on it from then on."""
    with Session(scene.store.engine) as session:
        contact = session.get(Contact, contact_id)
        assert contact is not None
        contact.active = active
        session.add(contact)
        session.commit()


def move(scene: Scene, alarm_id: str, seq: int) -> None:
    where = Position(lat=43.32, lon=45.70, accuracy_m=6, fix_ts=utcnow())
    location = Location(alarm_id=alarm_id, ts=utcnow(), seq=seq, position=where)
    scene.publish("location", location.to_payload())


# -- deactivated contacts ----------------------------------------------------------------------


def test_a_contact_deactivated_during_an_alarm_gets_no_reminder_position_or_working_link(
    scene: Scene,
) -> None:
    sister = scene.contact("Sister", "sister@example.org")
    brother = scene.contact("Brother", "brother@example.org")
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    [sister_link] = scene.ack_links("sister@example.org")
    assert httpx.post(sister_link).status_code == 200  # she is on it: she would get positions
    [brother_link] = scene.ack_links("brother@example.org")

    set_active_in_database(scene, sister, False)
    set_active_in_database(scene, brother, False)
    move(scene, "al-1", 50)
    wait_until(lambda: "location" in scene.events(alarm))
    scene.settle()
    scene.advance(300)  # the first reminder round
    scene.advance(300)

    assert [d.kind for d in scene.deliveries(alarm, "Sister")] == ["alarm"]
    assert [d.kind for d in scene.deliveries(alarm, "Brother")] == ["alarm"]
    assert len(scene.mails_to("brother@example.org")) == 1
    assert "REMINDER" in scene.mails_to("hq@example.org")[-1]  # HQ is still reminded
    for link in (brother_link, sister_link):
        assert httpx.get(link).status_code == 404
        assert httpx.post(link).status_code == 404
    assert all(e.actor != "Brother" for e in scene.store.events(alarm.id or 0))


def test_what_was_queued_for_a_contact_is_cancelled_once_it_is_deactivated(
    scene: Scene,
) -> None:
    scene.http.default = (503, b"{}")  # the channel is down: the message waits for a retry
    brother = scene.contact(
        "Brother",
        url=f"json://127.0.0.1:{scene.http.port}/brother",
        fallback_urls=[scene.smtp.url("brother@example.org")],
    )
    scene.start()
    alarm = scene.alarm()
    wait_until(lambda: [d.status for d in scene.deliveries(alarm, "Brother")] == ["retrying"])

    set_active_in_database(scene, brother, False)
    scene.http.default = (200, b"{}")
    scene.advance(600)  # the retry is due, and long past

    rows = [(row.status, row.detail) for row in scene.deliveries(alarm, "Brother")]
    assert rows == [("cancelled", "cancelled: the contact was deactivated")]  # no fallback row
    assert len(scene.http.requests) == 1  # no second try on the channel
    assert scene.mails_to("brother@example.org") == []  # no fallback
    events = scene.events(alarm)
    assert "delivery_cancelled" in events and "dead_letter" not in events


def brother_waiting_for_a_retry(scene: Scene) -> tuple[int, Alarm]:
    """A contact whose channel is down, and an alarm whose message to him waits for a retry."""
    scene.http.default = (503, b"{}")
    brother = scene.contact("Brother", url=f"json://127.0.0.1:{scene.http.port}/brother")
    scene.start()
    alarm = scene.alarm()
    wait_until(lambda: [d.status for d in scene.deliveries(alarm, "Brother")] == ["retrying"])
    return brother, alarm


def test_deactivating_a_contact_cancels_its_queued_messages_at_once_with_who_did_it(
    scene: Scene,
) -> None:
    brother, alarm = brother_waiting_for_a_retry(scene)

    change = admin.set_contact_active(scene.store.engine, brother, False, "duty officer")

    assert change.cancelled == 1 and not change.contact.active
    [row] = scene.deliveries(alarm, "Brother")
    assert row.status == "cancelled" and "deactivated by duty officer" in row.detail


def test_the_first_round_completes_when_the_last_recipient_it_waited_for_is_deactivated(
    scene: Scene,
) -> None:
    brother, alarm = brother_waiting_for_a_retry(scene)
    wait_until(lambda: [d.status for d in scene.deliveries(alarm, "HQ")] == ["sent"])
    assert scene.fresh(alarm).state == "received"  # waiting for Brother's message

    admin.set_contact_active(scene.store.engine, brother, False, "duty officer")

    assert scene.fresh(alarm).state == "notified"  # as when the dispatcher cancels it itself
    assert "notified" in scene.events(alarm)
    wait_until(lambda: "notified" in scene.stages("al-1"))  # the wristband hears it too


def test_a_responder_taken_off_call_gets_nothing_more_about_the_alarm(scene: Scene) -> None:
    from hub.responders import add_responder, set_availability

    responder = add_responder(
        scene.store.engine, "Volunteer", scene.smtp.url("volunteer@example.org"), 5000.0
    )
    assert responder.id is not None
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    with Session(scene.store.engine) as session:  # as if told by the nearby stage, unanswered
        session.add(
            _first_message(
                alarm.id or 0, responder_id=responder.id, role=Role.NEARBY, recipient="Volunteer"
            )
        )
        session.commit()

    set_availability(scene.store.engine, responder.id, False)
    scene.advance(300)  # the reminder round: HQ is reminded, the volunteer is not

    assert [d.kind for d in scene.deliveries(alarm, "Volunteer")] == ["alarm"]
    assert [d.kind for d in scene.deliveries(alarm, "HQ")] == ["alarm", "reminder"]


# -- press and public channels -----------------------------------------------------------------

#: Accepted before the rule that refuses it: stored policies must still run.
OLD_PUBLIC_POLICY: dict[str, object] = {
    "stages": [
        {"name": "first", "roles": ["hq", "trusted"], "reminder_interval_s": 300},
        {"name": "loud", "roles": ["hq", "press", "public"], "reminder_interval_s": 300},
    ]
}


def test_press_and_public_channels_get_no_link_no_reminder_and_no_position(
    scene: Scene,
) -> None:
    with Session(scene.store.engine) as session:  # a policy stored before the rule
        policy = session.get(EscalationPolicy, 1)
        assert policy is not None and policy.name == "default"
        policy.document = OLD_PUBLIC_POLICY
        session.add(policy)
        session.commit()
    scene.defender(allow_public_broadcast=True)
    press = f"json://127.0.0.1:{scene.http.port}/press"
    public = f"json://127.0.0.1:{scene.http.port}/public"
    scene.contact("Press list", role=Role.PRESS, org=True, url=press)
    scene.contact("Public X", role=Role.PUBLIC, org=True, url=public)
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    scene.advance(300)
    scene.advance(300)

    posts = [r for r in scene.http.requests if r.path in ("/press", "/public")]
    assert sorted(r.path for r in posts) == ["/press", "/public"]  # the public text, once each
    assert not any(b"/ack/" in r.body for r in posts)
    rows = [d for d in scene.deliveries(alarm) if d.role in ("press", "public")]
    assert {(d.kind, d.ack_token_hash) for d in rows} == {("public", None)}
    assert len(scene.mails_to("hq@example.org")) == 3  # HQ: the alarm and two reminders


def test_an_old_link_of_a_public_channel_neither_works_nor_brings_positions(scene: Scene) -> None:
    scene.defender(allow_public_broadcast=True)
    press = scene.contact(
        "Press list", role=Role.PRESS, org=True, url=f"json://127.0.0.1:{scene.http.port}/press"
    )
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    token, hashed = new_token()
    with Session(scene.store.engine) as session:  # a link a press channel got under old rules
        old = _first_message(alarm.id or 0, contact_id=press, role=Role.PRESS)
        old.ack_token_hash = hashed
        old.acknowledged_at = utcnow()  # ... and used
        session.add(old)
        session.commit()
    link = f"{scene.config.http.public_url}/ack/{token}"

    assert httpx.get(link).status_code == 404 and httpx.post(link).status_code == 404
    move(scene, "al-1", 50)
    wait_until(lambda: "location" in scene.events(alarm))
    scene.settle()
    assert not [d for d in scene.deliveries(alarm) if d.kind == "location_update"]
    assert "responder_coming" not in scene.stages("al-1")


@pytest.mark.parametrize("role", ["press", "public"])
def test_a_policy_with_reminders_to_a_public_role_is_refused_naming_the_stage(role: str) -> None:
    document = {"stages": [{"name": "loud", "roles": ["hq", role], "reminder_interval_s": 300}]}
    with pytest.raises(PolicyError, match=f"stage 'loud' has reminders but reaches {role}"):
        parse_policy(document)
    assert parse_policy(document, stored=True).stages[0].name == "loud"  # still runs


def _first_message(
    alarm_pk: int,
    *,
    role: Role,
    contact_id: int | None = None,
    responder_id: int | None = None,
    recipient: str = "someone",
) -> Delivery:
    """A first message as a stage queues it (status pending, stage 0)."""
    who = f"contact:{contact_id}" if contact_id is not None else f"responder:{responder_id}"
    return Delivery(
        key=f"A{alarm_pk}:first:{who}",
        alarm_pk=alarm_pk,
        contact_id=contact_id,
        responder_id=responder_id,
        role=role.value,
        kind="alarm",
        stage=0,
        recipient=recipient,
        channel_url="mailto://x@example.org",
        channel_masked="mailto://x@...",
        title="ALARM",
        body="body",
        short="short",
        status="sent",
    )
