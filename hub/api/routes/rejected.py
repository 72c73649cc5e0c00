"""``/v1/rejected-messages``: messages the hub refused, kept with the reason for HQ to review.

The payload itself is not shown (it may hold positions); ``natalia`` on the hub's machine can.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import col, select

from hub.api.pagination import Cursor, Limit, paginate
from hub.api.routes._common import (
    AlarmActor,
    AlarmReader,
    Context,
    DbSession,
    PathId,
    get_or_404,
)
from hub.models import RejectedMessage as RejectedRow
from sdk.models import Page, RejectedMessage

router = APIRouter(prefix="/rejected-messages", tags=["rejected messages"])


def as_rejected(row: RejectedRow) -> RejectedMessage:
    return RejectedMessage.model_validate(row)


@router.get("", response_model=Page[RejectedMessage], summary="Refused messages, newest first")
def list_rejected(
    session: DbSession,
    _: AlarmReader,
    reviewed: Annotated[
        bool | None, Query(description="false: only those HQ has not reviewed yet.")
    ] = None,
    suspicious: Annotated[
        bool | None, Query(description="true: only those that may be forged or replayed.")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[RejectedMessage]:
    query = select(RejectedRow)
    if reviewed is not None:
        reviewed_at = col(RejectedRow.reviewed_at)
        query = query.where(reviewed_at.is_not(None) if reviewed else reviewed_at.is_(None))
    if suspicious is not None:
        query = query.where(RejectedRow.suspicious == suspicious)
    return paginate(
        session, query, RejectedRow.id, as_rejected, limit=limit, cursor=cursor, newest_first=True
    )


@router.post(
    "/{rejected_id}/review",
    response_model=RejectedMessage,
    summary="Mark as reviewed by HQ (the first review's time is kept)",
)
def review(rejected_id: PathId, ctx: Context, session: DbSession, _: AlarmActor) -> RejectedMessage:
    row = get_or_404(session, RejectedRow, rejected_id, "rejected message")
    if row.reviewed_at is None:
        row.reviewed_at = ctx.clock.now()
        session.add(row)
        session.commit()
        session.refresh(row)
    return as_rejected(row)
