"""A duress code must look like a real cancel to everyone outside HQ — the wristband, whoever
holds a contact's link or reads their messages, the public, the API without operations rights —
then and later, while HQ sees the truth. Each test raises two alarms from one wristband, cancels
one with the real code and the other with the duress code, and compares what outsiders got.
Real broker, SMTP and HTTP receivers, the hub and its web server, a fake clock."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from devicekit.protocol import Location, Position, utcnow
from hub.models import Alarm, Role
from tests.support.receivers import wait_until
from tests.support.scene import STAGED_POLICY as POLICY
from tests.support.scene import Scene

CANCEL_CODE, DURESS_CODE = "4711", "9999"


@pytest.fixture
def scene(broker, smtp_server, http_receiver, tmp_path) -> Iterator[Scene]:
    stage = Scene.with_hq(broker, smtp_server, http_receiver, tmp_path, POLICY)
    stage.contact("Sister", "sister@example.org")
    stage.contact("Partner NGO", "partner@example.org", role=Role.PARTNER, org=True)
    stage.contact(
        "Public X", role=Role.PUBLIC, org=True, url=f"json://127.0.0.1:{http_receiver.port}/public"
    )
    stage.defender(cancel_code=CANCEL_CODE, duress_code=DURESS_CODE, allow_public_broadcast=True)
    try:
        yield stage.start()
    finally:
        stage.close()


def raise_and_cancel(scene: Scene, alarm_id: str, code: str) -> Alarm:
    """An alarm, its first round, a minute, then ``code`` entered on the wristband."""
    alarm = scene.alarm(alarm_id)
    scene.settle()
    scene.advance(60)
    scene.cancel(alarm_id, code)
    wait_until(lambda: "cancelled" in scene.stages(alarm_id))
    scene.settle()
    return alarm


def page(response: httpx.Response, alarm: Alarm) -> tuple[int, str]:
    """Status and text of an acknowledgement page, the alarm's reference taken out."""
    return response.status_code, response.text.replace(f"A{alarm.id}", "A?")


def test_a_contacts_link_and_messages_do_not_tell_a_duress_code_from_the_cancel_code(
    scene: Scene,
) -> None:
    real = raise_and_cancel(scene, "al-real", CANCEL_CODE)
    duress = raise_and_cancel(scene, "al-duress", DURESS_CODE)
    [real_link] = scene.ack_links("sister@example.org", real)
    [duress_link] = scene.ack_links("sister@example.org", duress)

    assert page(httpx.get(duress_link), duress) == page(httpx.get(real_link), real)
    answer = page(httpx.post(duress_link), duress)
    assert answer == page(httpx.post(real_link), real)
    assert "already closed (cancelled)" in answer[1]
    scene.advance(300)  # reminders, had the alarm stayed open for her
    scene.advance(300)
    assert scene.mails_about("sister@example.org", duress) == scene.mails_about(
        "sister@example.org", real
    )
    assert [s.split(":")[0] for s in scene.mails_about("sister@example.org", real)] == [
        "ALARM PANIC (wristband pulled)",
        "Alarm cancelled",
    ]
    # HQ knows: the duress alarm is open, escalated to the partners, and HQ is reminded.
    assert scene.fresh(duress).state != "cancelled" and scene.fresh(duress).duress
    assert any("DURESS" in s for s in scene.mails_about("hq@example.org", duress))
    assert len(scene.mails_about("partner@example.org", duress)) == 1
    assert scene.mails_about("partner@example.org", real) == []

    scene.advance(24 * 3600 + 1)  # the links' grace period after the (apparent) cancel
    assert httpx.get(duress_link).status_code == httpx.get(real_link).status_code == 404


def test_the_wristband_hears_the_same_after_a_duress_code_whatever_hq_does_later(
    scene: Scene,
) -> None:
    real = raise_and_cancel(scene, "al-real", CANCEL_CODE)
    duress = raise_and_cancel(scene, "al-duress", DURESS_CODE)
    scene.cancel("al-real", CANCEL_CODE)  # the device re-sends a cancel, or the code is re-entered
    scene.cancel("al-duress", CANCEL_CODE)  # ... and a captor may force the real code now
    wait_until(lambda: scene.stages("al-duress").count("cancelled") == 2)
    wait_until(lambda: scene.stages("al-real").count("cancelled") == 2)

    scene.actions.acknowledge(f"A{duress.id}", "duty officer")
    scene.actions.verify(f"A{duress.id}", "duty officer")
    scene.actions.resolve(f"A{duress.id}", "duty officer")
    scene.advance(60)
    scene.advance(600)

    assert scene.stages("al-duress") == scene.stages("al-real")
    assert scene.stages("al-real")[-2:] == ["cancelled", "cancelled"]
    assert scene.fresh(real).state == "cancelled"
    assert scene.fresh(duress).state == "resolved"  # by HQ, not by the forced real code
    assert not any(r.path == "/public" for r in scene.http.requests)  # nothing public after it


def test_positions_after_a_duress_code_go_to_hq_only(scene: Scene) -> None:
    alarm = scene.alarm("al-duress")
    scene.settle()
    [sister_link] = scene.ack_links("sister@example.org", alarm)
    [hq_link] = scene.ack_links("hq@example.org", alarm)
    httpx.post(sister_link)  # both on it: both would get new positions
    httpx.post(hq_link)
    scene.cancel("al-duress", DURESS_CODE)
    wait_until(lambda: "cancelled" in scene.stages("al-duress"))
    scene.seq += 1
    where = Position(lat=43.33, lon=45.71, accuracy_m=6, fix_ts=utcnow())
    move = Location(alarm_id="al-duress", ts=utcnow(), seq=scene.seq, position=where)
    scene.publish("location", move.to_payload())
    wait_until(lambda: any(d.kind == "location_update" for d in scene.deliveries(alarm)))
    scene.settle()

    updates = [d.recipient for d in scene.deliveries(alarm) if d.kind == "location_update"]
    assert updates == ["HQ"]


def test_outside_operations_a_duress_alarm_reads_as_a_real_cancel(scene: Scene) -> None:
    from hub.disclosure import outside_rows, outside_view

    real = raise_and_cancel(scene, "al-real", CANCEL_CODE)
    duress = raise_and_cancel(scene, "al-duress", DURESS_CODE)
    scene.actions.acknowledge(f"A{duress.id}", "duty officer")  # HQ acts on the duress alarm
    scene.advance(300)

    seen, truth = outside_view(scene.fresh(duress)), scene.fresh(real)
    assert (seen.state, seen.duress, seen.acknowledged_at, seen.verified_at) == (
        truth.state,
        truth.duress,
        truth.acknowledged_at,
        truth.verified_at,
    )
    assert seen.closed_at is not None and truth.closed_at is not None
    assert seen.closed_at - seen.received_at == truth.closed_at - truth.received_at

    def events(alarm: Alarm) -> Counter[tuple[str, str, str]]:
        rows = outside_rows(scene.store.events(alarm.id or 0))
        return Counter((e.kind, e.actor, _anonymous(e.detail, alarm)) for e in rows)

    def deliveries(alarm: Alarm) -> Counter[tuple[str, str, str, str]]:
        rows = outside_rows(scene.store.deliveries(alarm.id or 0))
        return Counter((d.kind, d.recipient, d.role, d.status) for d in rows)

    assert events(duress) == events(real)
    assert deliveries(duress) == deliveries(real)
    assert any(e.kind == "duress" for e in scene.store.events(duress.id or 0))  # HQ sees it


def _anonymous(detail: str, alarm: Alarm) -> str:
    """A timeline text without what differs between any two alarms (reference, times)."""
    detail = detail.replace(f"A{alarm.id}", "A?")
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "<time>", detail)
