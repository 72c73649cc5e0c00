"""What a caller without operations rights may learn: only what it created itself.

The integration role (the fund's and the conference's systems) holds no ``operations:read``: it
must learn nothing about defenders, their alarms or anything HQ recorded — not their names, not
which ids exist, not which alarm is whose. So for such a caller:

- lists hold only the rows it created (``created_by`` is its actor);
- a row it did not create answers exactly as a row that does not exist (the same 404 text);
- references it sends (a defender id, an alarm id) are not checked in its sight: whether they
  exist or match is never the answer to its request (see ``hub.fund.service.submit``);
- audit trails name HQ's people as ``hq``.

Roles with ``operations:read`` (admin, hq, read_only) see everything their permissions allow.

Only HQ's roles (``contacts:read``: admin, hq) are told who was told of an alarm and whether a
duress code was entered. Every other consumer — the read-only role, its live stream, webhook
receivers — sees alarms as ``hub.disclosure`` shows them outside HQ: a duress alarm is a really
cancelled one, in every view, filter and list, and nothing HQ did after the code is shown; and
the ids of timeline events and deliveries as ``hub.outside_ids`` shows them, so that the rows it
is not shown leave no gaps. The ids it sends back are mapped back (:func:`event_position`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col
from sqlmodel.sql.expression import SelectOfScalar

from hub.api.permissions import Permission, allows
from hub.api.tokens import Principal
from hub.api.views import (
    alarm_event_view,
    alarm_view,
    delivery_view,
    outside_alarm_view,
    outside_delivery_view,
    outside_event_view,
)
from hub.disclosure import duress_times, outside_delivery, outside_state, shown_outside
from hub.models import Alarm as AlarmRow
from hub.models import AlarmEvent as AlarmEventRow
from hub.models import Delivery as DeliveryRow
from hub.outside_ids import ROW_IDS, Ids, outside_ids_of
from sdk.models import Alarm, AlarmEvent, Delivery

Row = TypeVar("Row", AlarmEventRow, DeliveryRow)

#: How an outside caller sees anyone but itself in an audit trail.
OTHERS = "hq"


def sees_everything(principal: Principal) -> bool:
    """Whether ``principal`` may know about defenders and rows others created."""
    return allows(principal.role, Permission.OPERATIONS_READ)


def owner_filter(principal: Principal) -> str | None:
    """The ``created_by`` a caller's lists are limited to; None: no limit."""
    return None if sees_everything(principal) else principal.actor


def may_see(principal: Principal, created_by: str) -> bool:
    """Whether ``principal`` may see a row ``created_by`` someone."""
    return sees_everything(principal) or created_by == principal.actor


def actor_as_seen(principal: Principal, actor: str) -> str:
    """An audit trail's actor as ``principal`` may see it: itself, or ``hq`` for anyone else."""
    return actor if may_see(principal, actor) else OTHERS


def knows_recipients(principal: Principal) -> bool:
    """Whether ``principal`` may see who was told and who acted (HQ and admins)."""
    return allows(principal.role, Permission.CONTACTS_READ)


def alarm_view_for(principal: Principal) -> Callable[[AlarmRow], Alarm]:
    """Alarms as they are for HQ; for everyone else a duress alarm is a cancelled one."""
    return alarm_view if knows_recipients(principal) else outside_alarm_view


def alarm_state_for(principal: Principal) -> Mapped[str] | ColumnElement[str]:
    """The alarm state a ``?state=`` filter compares, as the caller sees it (SQL)."""
    return col(AlarmRow.state) if knows_recipients(principal) else outside_state()


def event_ids_for(principal: Principal, session: Session) -> Ids:
    """Timeline event ids as ``principal`` sees them: the rows' own for HQ, permuted for
    everyone else (``hub.outside_ids``)."""
    return ROW_IDS if knows_recipients(principal) else outside_ids_of(session).events


def event_position(principal: Principal, session: Session, given: int) -> int | None:
    """The event id to go on after, from an id ``principal`` was given and sends back
    (``?after=``, ``Last-Event-ID``); 0, before every event, stays 0.

    None when, outside HQ, it names no event the caller may see: an id from before ids were
    permuted, or one made up. Going on from wherever it happens to point would skip or repeat
    events without a word; the caller gets a clear error instead. (For an event HQ only sees,
    the answer is the same as for none: it tells nothing.)
    """
    if knows_recipients(principal) or given == 0:
        return given
    raw = event_ids_for(principal, session).raw(given)
    row = session.get(AlarmEventRow, raw)
    return raw if row is not None and not row.hq_only else None


def delivery_ids_for(principal: Principal, session: Session) -> Ids:
    """Delivery ids as ``principal`` sees them (see :func:`event_ids_for`)."""
    return ROW_IDS if knows_recipients(principal) else outside_ids_of(session).deliveries


def event_view_for(principal: Principal, session: Session) -> Callable[[AlarmEventRow], AlarmEvent]:
    """Timeline entries naming people for HQ, roles for everyone else."""
    if knows_recipients(principal):
        return alarm_event_view
    return partial(outside_event_view, ids=event_ids_for(principal, session))


def visible_rows(
    principal: Principal, query: SelectOfScalar[Row], table: type[Row]
) -> SelectOfScalar[Row]:
    """``query`` (of timeline events or deliveries) limited to what ``principal`` may see:
    in SQL, so pages hold only shown rows (``hub.disclosure``)."""
    return query if knows_recipients(principal) else query.where(shown_outside(table))


def delivery_views_for(
    principal: Principal, session: Session
) -> Callable[[Sequence[DeliveryRow]], list[Delivery]]:
    """Deliveries naming people for HQ; for everyone else roles only, each as it was when its
    alarm's duress code came (``hub.disclosure.outside_delivery``)."""
    if knows_recipients(principal):
        return lambda rows: [delivery_view(row) for row in rows]

    ids = delivery_ids_for(principal, session)

    def outside(rows: Sequence[DeliveryRow]) -> list[Delivery]:
        duress = duress_times(session, {row.alarm_pk for row in rows})
        return [
            outside_delivery_view(outside_delivery(row, duress.get(row.alarm_pk or 0)), ids)
            for row in rows
        ]

    return outside
