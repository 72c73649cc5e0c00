"""``/v1/deliveries``: every message the hub queued, one row per recipient and channel.

Message bodies are not shown (they hold positions) and channels are masked. Callers without
HQ's rights get roles instead of people, only what ``hub.disclosure`` shows outside HQ, and the
ids ``hub.outside_ids`` shows them (their cursors hold those).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import select

from hub.api.pagination import Cursor, Limit, paginate_rows
from hub.api.routes._common import AlarmReader, DbSession, QueryId
from hub.api.visibility import delivery_ids_for, delivery_views_for, visible_rows
from hub.models import Delivery as DeliveryRow
from hub.models import DeliveryStatus
from sdk.models import Delivery, Page

router = APIRouter(prefix="/deliveries", tags=["deliveries"])


@router.get("", response_model=Page[Delivery], summary="Deliveries, newest first")
def list_deliveries(
    session: DbSession,
    principal: AlarmReader,
    alarm_id: QueryId = None,
    status: DeliveryStatus | None = None,
    kind: Annotated[str | None, Query(pattern=r"^[a-z_]{1,64}$")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Delivery]:
    """``kind``: what the message is about: alarm, reminder, acknowledged, resolved, test..."""
    query = visible_rows(principal, select(DeliveryRow), DeliveryRow)
    if alarm_id is not None:
        query = query.where(DeliveryRow.alarm_pk == alarm_id)
    if status is not None:
        query = query.where(DeliveryRow.status == status.value)
    if kind is not None:
        query = query.where(DeliveryRow.kind == kind)
    return paginate_rows(
        session,
        query,
        DeliveryRow.id,
        delivery_views_for(principal, session),
        limit=limit,
        cursor=cursor,
        newest_first=True,
        ids=delivery_ids_for(principal, session),
    )
