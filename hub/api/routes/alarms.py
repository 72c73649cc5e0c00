"""``/v1/alarms`` (reads) and ``/v1/alarm-events``: alarms, their timelines and deliveries.

An alarm's id is the number in its reference: alarm 12 is what HQ calls "A12". HQ actions are
in ``alarm_actions``; the live stream of events is ``/v1/alarm-events/stream``.

Callers without HQ's rights see every alarm, filter and list as ``hub.api.visibility`` shows
them outside HQ: a duress alarm reads, filters and pages as a really cancelled one, and the ids
of timeline events and deliveries are the ones ``hub.outside_ids`` shows them (``?after=`` and
cursors take those back).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, select

from devicekit.protocol import ID_RE, AlarmKind
from hub.api.errors import Invalid
from hub.api.pagination import Cursor, Limit, paginate
from hub.api.routes._common import AlarmReader, DbSession, PathId, QueryId, get_or_404
from hub.api.visibility import (
    alarm_state_for,
    alarm_view_for,
    delivery_views_for,
    event_ids_for,
    event_position,
    event_view_for,
    visible_rows,
)
from hub.models import Alarm as AlarmRow
from hub.models import AlarmEvent as AlarmEventRow
from hub.models import Delivery as DeliveryRow
from sdk.models import MAX_ID, Alarm, AlarmEvent, AlarmState, Delivery, Page

router = APIRouter(tags=["alarms"])

Moment = Annotated[
    datetime | None,
    Query(description="ISO 8601; without a time zone it is taken as UTC."),
]


def utc(moment: datetime) -> datetime:
    """Aware UTC, as the hub writes its times (a naive time from a client is taken as UTC)."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise Invalid(f"{moment.isoformat()} is out of range") from None


@router.get("/alarms", response_model=Page[Alarm], summary="Alarms, newest first")
def list_alarms(
    session: DbSession,
    principal: AlarmReader,
    state: Annotated[
        list[AlarmState] | None, Query(description="Repeat for several: ?state=received&...")
    ] = None,
    kind: AlarmKind | None = None,
    defender_id: QueryId = None,
    device_id: Annotated[str | None, Query(pattern=ID_RE.pattern)] = None,
    since: Moment = None,
    until: Moment = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Alarm]:
    """``since`` and ``until`` bound the time the hub received the alarm (since <= t < until)."""
    query = select(AlarmRow)
    if state:
        query = query.where(alarm_state_for(principal).in_([s.value for s in state]))
    if kind is not None:
        query = query.where(AlarmRow.kind == kind.value)
    if defender_id is not None:
        query = query.where(AlarmRow.defender_id == defender_id)
    if device_id is not None:
        query = query.where(AlarmRow.device_id == device_id)
    start = utc(since) if since is not None else None
    end = utc(until) if until is not None else None
    if start is not None and end is not None and start >= end:
        raise Invalid("since must be before until")
    if start is not None:
        query = query.where(col(AlarmRow.received_at) >= start)
    if end is not None:
        query = query.where(col(AlarmRow.received_at) < end)
    view = alarm_view_for(principal)
    return paginate(
        session, query, AlarmRow.id, view, limit=limit, cursor=cursor, newest_first=True
    )


@router.get("/alarms/{alarm_id}", response_model=Alarm)
def get_alarm(alarm_id: PathId, session: DbSession, principal: AlarmReader) -> Alarm:
    return alarm_view_for(principal)(get_or_404(session, AlarmRow, alarm_id, "alarm"))


@router.get(
    "/alarms/{alarm_id}/events",
    response_model=list[AlarmEvent],
    summary="The alarm's timeline, oldest first",
)
def alarm_timeline(
    alarm_id: PathId, session: DbSession, principal: AlarmReader
) -> list[AlarmEvent]:
    get_or_404(session, AlarmRow, alarm_id, "alarm")
    query = select(AlarmEventRow).where(AlarmEventRow.alarm_pk == alarm_id)
    query = visible_rows(principal, query, AlarmEventRow)
    view = event_view_for(principal, session)
    return [view(row) for row in session.exec(query.order_by(col(AlarmEventRow.id)))]


@router.get(
    "/alarms/{alarm_id}/deliveries",
    response_model=list[Delivery],
    summary="Every message about the alarm, in the order they were queued",
)
def alarm_deliveries(
    alarm_id: PathId, session: DbSession, principal: AlarmReader
) -> list[Delivery]:
    get_or_404(session, AlarmRow, alarm_id, "alarm")
    query = select(DeliveryRow).where(DeliveryRow.alarm_pk == alarm_id)
    query = visible_rows(principal, query, DeliveryRow)
    views = delivery_views_for(principal, session)
    return views(session.exec(query.order_by(col(DeliveryRow.id))).all())


@router.get(
    "/alarm-events",
    response_model=Page[AlarmEvent],
    summary="Every alarm's timeline events, oldest first (catch-up for the live stream)",
)
def list_alarm_events(
    session: DbSession,
    principal: AlarmReader,
    alarm_id: QueryId = None,
    after: Annotated[
        int | None,
        Query(
            ge=0, le=MAX_ID, description="Only events after this event id (e.g. the stream's last)."
        ),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AlarmEvent]:
    ids = event_ids_for(principal, session)
    query = visible_rows(principal, select(AlarmEventRow), AlarmEventRow)
    if alarm_id is not None:
        query = query.where(AlarmEventRow.alarm_pk == alarm_id)
    if after is not None:
        position = event_position(principal, session, after)
        if position is None:
            raise Invalid(
                f"after={after} is not the id of an event you were given; use an id "
                "from this list or the stream"
            )
        query = query.where(col(AlarmEventRow.id) > position)
    view = event_view_for(principal, session)
    return paginate(session, query, AlarmEventRow.id, view, limit=limit, cursor=cursor, ids=ids)
