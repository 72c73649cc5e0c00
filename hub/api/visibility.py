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
"""

from __future__ import annotations

from collections.abc import Callable

from hub.api.permissions import Permission, allows
from hub.api.tokens import Principal
from hub.api.views import (
    alarm_event_view,
    delivery_view,
    outside_delivery_view,
    outside_event_view,
)
from hub.models import AlarmEvent as AlarmEventRow
from hub.models import Delivery as DeliveryRow
from sdk.models import AlarmEvent, Delivery

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


def event_view_for(principal: Principal) -> Callable[[AlarmEventRow], AlarmEvent]:
    """Timeline entries naming people for HQ, roles for everyone else."""
    return alarm_event_view if knows_recipients(principal) else outside_event_view


def delivery_view_for(principal: Principal) -> Callable[[DeliveryRow], Delivery]:
    return delivery_view if knows_recipients(principal) else outside_delivery_view
