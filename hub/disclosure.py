"""What those outside HQ may learn of an alarm: after a duress code, what a real cancel leaves.

A duress code is entered when someone forces the defender to cancel. Whoever may be watching
must see a real cancel; HQ must see the truth. "Outside HQ" is:

- the wristband and whoever holds it: it hears "cancelled" and then nothing more
  (``hub.lifecycle.device_stage``, ``Lifecycle.cancel_request``);
- everyone told of the alarm, and whoever holds their links or reads their messages: they get
  the "cancelled" message a real cancel sends and then, except HQ, nothing more; their links say
  "cancelled" (``sees_cancelled``, ``hub.acklinks``);
- press and public channels: nothing public is sent after a duress code;
- API callers without HQ's rights (``contacts:read``), webhook receivers, any report for
  outsiders: they see :func:`outside_view` of the alarm, lists filtered and counted by
  :func:`outside_state`, only the timeline events and deliveries that are not ``hq_only``
  (:func:`outside_rows`, :func:`shown_outside`), and those deliveries as
  :func:`outside_delivery` shows them.

Rows that would reveal the duress code — the "duress" event, HQ's duress alert, the stages run
early, everything recorded about the alarm after the code — are marked ``hq_only`` when they are
written (``Delivery.hq_only``, ``AlarmEvent.hq_only``), so every consumer filters the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, case, not_
from sqlmodel import Session, col, select

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
    came, not marked duress, nothing HQ did after the code (acknowledged, verified), and its
    position erased when retention would have erased a really cancelled alarm's."""
    view = alarm.model_copy()
    if not alarm.duress:
        return view
    cancelled_at = stored_utc(alarm.duress_at)
    view.duress = False
    view.duress_at = None
    view.outside_position_erased = False
    if alarm.outside_position_erased:
        view.lat = view.lon = view.accuracy_m = view.fix_ts = None
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


def shown_outside(table: type[Row]) -> ColumnElement[bool]:
    """:func:`outside_rows` as a SQL condition, so pages and counts hold only what is shown."""
    return not_(col(table.hq_only))


def outside_state() -> ColumnElement[str]:
    """The state of :func:`outside_view` as a SQL expression: a filter on it finds a duress
    alarm exactly where it finds a really cancelled one, and nowhere else."""
    return case((col(Alarm.duress), AlarmState.CANCELLED.value), else_=col(Alarm.state))


def outside_delivery(delivery: Delivery, duress_at: datetime | None) -> Delivery:
    """A detached copy of a delivery shown outside HQ (not ``hq_only``), as it was when its
    alarm's duress code came (``duress_at``; None: no duress): HQ acknowledging later through
    its link marks its earlier messages too, which no one can do after a real cancel."""
    view = delivery.model_copy()
    if _after(delivery.acknowledged_at, stored_utc(duress_at)):
        view.acknowledged_at = None
    return view


def duress_times(session: Session, alarm_pks: Collection[int | None]) -> dict[int, datetime]:
    """When the duress code came, for those of ``alarm_pks`` that had one."""
    wanted = {pk for pk in alarm_pks if pk is not None}
    if not wanted:
        return {}
    rows = session.exec(
        select(Alarm.id, Alarm.duress_at).where(col(Alarm.id).in_(wanted), col(Alarm.duress))
    )
    return {pk: stored_utc(at) for pk, at in rows if pk is not None and at is not None}


def _after(moment: datetime | None, cutoff: datetime | None) -> bool:
    aware = stored_utc(moment)
    return aware is not None and cutoff is not None and aware >= cutoff


__all__ = [
    "closing_key",
    "duress_times",
    "outside_delivery",
    "outside_rows",
    "outside_state",
    "outside_view",
    "sees_cancelled",
    "shown_outside",
]
