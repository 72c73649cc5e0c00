"""What those outside HQ may learn of an alarm: after a duress code, what a real cancel leaves.

A duress code is entered when someone forces the defender to cancel. Whoever may be watching
must see a real cancel; HQ must see the truth. "Outside HQ" is:

- the wristband and whoever holds it: it hears "cancelled" and then nothing more
  (``hub.lifecycle.device_stage``, ``Lifecycle.cancel_request``);
- everyone told of the alarm, and whoever holds their links or reads their messages: they get
  the "cancelled" message a real cancel sends and then, except HQ, nothing more; their links say
  "cancelled" (``sees_cancelled``, ``hub.acklinks``);
- press and public channels: nothing public is sent after a duress code;
- API callers without operations rights, webhook receivers, any report for outsiders: they see
  :func:`outside_view` of the alarm, and only the timeline events and deliveries that are not
  ``hq_only``.

Rows that would reveal the duress code — the "duress" event, HQ's duress alert, the stages run
early, everything recorded about the alarm after the code — are marked ``hq_only`` when they are
written (``Delivery.hq_only``, ``AlarmEvent.hq_only``), so every consumer filters the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypeVar

from sqlmodel import Session, select

from hub.clock import stored_utc
from hub.models import Alarm, AlarmEvent, AlarmState, Delivery, Role

Row = TypeVar("Row", AlarmEvent, Delivery)


def closing_key(alarm: Alarm, what: str, target_key: str) -> str:
    """The idempotency key of the closing message ``what`` (cancelled, resolved...) to one
    recipient (``contact:3``)."""
    return f"A{alarm.id}:{what}:{target_key}"


def sees_cancelled(session: Session, alarm: Alarm, target_key: str, role: Role) -> bool:
    """Whether the recipient (``contact:3``) must see ``alarm`` as cancelled although it is not:
    after a duress code, everyone who was sent "cancelled" except HQ, which hears the truth.
    Nothing more about the alarm goes to them, and their links say it was cancelled."""
    if not alarm.duress or role is Role.HQ:
        return False
    key = closing_key(alarm, AlarmState.CANCELLED.value, target_key)
    return session.exec(select(Delivery.id).where(Delivery.key == key)).first() is not None


def outside_view(alarm: Alarm) -> Alarm:
    """A detached copy of ``alarm`` as those outside HQ may see it: unchanged, except that
    after a duress code it is the alarm a real cancel would have left — cancelled when the code
    came, not marked duress, and nothing HQ did after the code (acknowledged, verified)."""
    view = alarm.model_copy()
    if not alarm.duress:
        return view
    cancelled_at = stored_utc(alarm.duress_at)
    view.duress = False
    view.duress_at = None
    view.state = AlarmState.CANCELLED.value
    view.closed_at = cancelled_at
    if _after(alarm.acknowledged_at, cancelled_at):
        view.acknowledged_at = None
    if _after(alarm.verified_at, cancelled_at):
        view.verified_at = None
    return view


def outside_rows(rows: Iterable[Row]) -> list[Row]:
    """The timeline events or deliveries of an alarm that those outside HQ may see."""
    return [row for row in rows if not row.hq_only]


def _after(moment: datetime | None, cutoff: datetime | None) -> bool:
    aware = stored_utc(moment)
    return aware is not None and cutoff is not None and aware >= cutoff


__all__ = ["closing_key", "outside_rows", "outside_view", "sees_cancelled"]
