"""Timers are rows: a hub restarted in the middle of an escalation continues the schedule."""

from __future__ import annotations

from hub.models import Role
from tests.support.scene import STAGED_POLICY as POLICY
from tests.support.scene import Scene


def test_restart_mid_escalation_continues_the_schedule(
    broker, database_url, smtp_server, http_receiver, tmp_path
) -> None:
    scene = Scene(broker, database_url, smtp_server, http_receiver, tmp_path)
    scene.policy(POLICY)
    scene.contact("Sister", "sister@example.org")
    scene.contact("Partner NGO", "partner@example.org", role=Role.PARTNER, org=True)
    try:
        scene.start()
        scene.alarm()
        scene.settle()
        scene.stop_hub()
        scene.clock.advance(900)  # the partner stage fell due while the hub was down
        scene.start()
        scene.advance(0)
        assert len(scene.mails_to("partner@example.org")) == 1
        assert len(scene.mails_to("sister@example.org")) == 2  # alarm + the overdue reminder
    finally:
        scene.close()
