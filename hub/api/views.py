"""Database rows as wire models (``sdk.models``): what the API may show of each.

Channel URLs are shown masked; delivery bodies are not shown (they hold positions).

Consumers outside HQ (webhooks, the read-only role, their live streams) get the ``outside_*``
views: who was told and who acted are named by role (``trusted``, ``hq``...), never by name or
channel, and providers' texts (which can quote an address) are left out; a duress alarm is
shown as the really cancelled alarm ``hub.disclosure.outside_view`` makes of it; timeline events
and deliveries carry the ids ``hub.outside_ids`` shows outside HQ, which count nothing.
"""

from __future__ import annotations

from hub.disclosure import outside_view
from hub.models import Alarm as AlarmRow
from hub.models import AlarmEvent as AlarmEventRow
from hub.models import Delivery as DeliveryRow
from hub.outside_ids import Ids
from hub.plugin_api import mask_url
from sdk.models import Alarm, AlarmEvent, AlarmState, Delivery, Position


def alarm_ref(alarm_pk: int) -> str:
    return f"A{alarm_pk}"


def alarm_view(row: AlarmRow) -> Alarm:
    assert row.id is not None
    position = None
    if row.lat is not None and row.lon is not None:
        position = Position(lat=row.lat, lon=row.lon, accuracy_m=row.accuracy_m, fix_ts=row.fix_ts)
    return Alarm(
        id=row.id,
        ref=alarm_ref(row.id),
        device_id=row.device_id,
        defender_id=row.defender_id,
        device_alarm_id=row.alarm_id,
        kind=row.kind,
        state=AlarmState(row.state),
        duress=row.duress,
        device_ts=row.device_ts,
        received_at=row.received_at,
        position=position,
        battery=row.battery,
        copies_received=row.copies_received,
        clock_skew_s=row.clock_skew_s,
        acknowledged_at=row.acknowledged_at,
        verified_at=row.verified_at,
        closed_at=row.closed_at,
    )


def outside_alarm_view(row: AlarmRow) -> Alarm:
    """An alarm as those outside HQ may see it: after a duress code, a really cancelled one."""
    return alarm_view(outside_view(row))


def alarm_event_view(row: AlarmEventRow) -> AlarmEvent:
    assert row.id is not None
    return AlarmEvent(
        id=row.id,
        alarm_id=row.alarm_pk,
        alarm_ref=alarm_ref(row.alarm_pk),
        at=row.at,
        kind=row.kind,
        actor=row.actor,
        detail=row.detail,
    )


def delivery_view(row: DeliveryRow) -> Delivery:
    assert row.id is not None
    return Delivery(
        id=row.id,
        alarm_id=row.alarm_pk,
        kind=row.kind,
        role=row.role,
        recipient=row.recipient,
        channel=row.channel_masked,
        channel_index=row.channel_index,
        stage=row.stage,
        status=row.status,
        attempts=row.attempts,
        detail=row.detail,
        created_at=row.created_at,
        finished_at=row.finished_at,
        next_try_at=row.next_try_at,
        acknowledged_at=row.acknowledged_at,
    )


def masked(urls: list[str]) -> list[str]:
    return [mask_url(url) for url in urls]


#: Timeline entries whose detail names nobody (the hub's own steps); others are summarised.
_NAMELESS_DETAIL = frozenset(
    {"received", "late", "duplicate", "stage", "stage_skipped", "public_refused", "notified"}
)


def outside_actor(row: AlarmEventRow) -> str:
    """The hub and devices by their id; an API token or a person by role."""
    if row.actor == "hub" or row.actor.startswith("device:"):
        return row.actor
    if row.kind == "acknowledged" and not row.actor.startswith(("api:", "cli:")):
        return row.role or "recipient"  # through a recipient's link
    return "hq"


def outside_event_view(row: AlarmEventRow, ids: Ids) -> AlarmEvent:
    """An alarm event as a partner or a dashboard sees it: roles, not people, and its id as
    ``ids`` (the events' permutation) shows it."""
    view = alarm_event_view(row)
    actor = outside_actor(row)
    if row.kind in _NAMELESS_DETAIL and not row.detail.count("@"):
        detail = row.detail
    elif row.role is not None:
        detail = f"{row.kind.replace('_', ' ')}: {row.role} recipient"
    else:
        detail = f"{row.kind.replace('_', ' ')} by {actor}"
    return view.model_copy(update={"id": ids.shown(view.id), "actor": actor, "detail": detail})


def outside_delivery_view(row: DeliveryRow, ids: Ids) -> Delivery:
    """A delivery without its recipient's name, channel or the provider's text, and its id as
    ``ids`` (the deliveries' permutation) shows it."""
    view = delivery_view(row)
    scheme = row.channel_masked.split("://", 1)[0]
    return view.model_copy(
        update={
            "id": ids.shown(view.id),
            "recipient": row.role,
            "channel": f"{scheme}://",
            "detail": "",
        }
    )
