"""``/v1/fund-requests``: requests for support from the emergency fund, their review and audit
trail.

A request is submitted (``fund:write``), edited only while still submitted, and moved through
review by HQ (``fund:review``): submitted -> under_review | rejected; under_review -> approved |
rejected; approved -> disbursed. Every change is in the request's history with who made it, and
queues messages to HQ and, for submissions and decisions, to the defender's trusted contacts.
Messages name request 12 as ``F12``.

A caller without operations rights (the fund's system) sees only the requests its token's name
submitted, HQ's people in their history as ``hq``, and never whether the defender and alarm a
request names exist or belong together: such a request is taken as sent and the problem shown
to HQ (``reference_problem``), who can only reject it (``hub.api.visibility``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from fastapi import APIRouter, status
from sqlmodel import Session, select

from hub.api.errors import Conflict, Invalid, NotFound
from hub.api.pagination import Cursor, Limit, paginate
from hub.api.routes._common import (
    Context,
    DbSession,
    FundReader,
    FundReviewer,
    FundWriter,
    PathId,
    QueryId,
)
from hub.api.tokens import Principal
from hub.api.visibility import actor_as_seen, may_see, owner_filter, sees_everything
from hub.fund import service
from hub.fund.tables import FundRequest as FundRequestRow
from hub.fund.views import as_fund_event, as_fund_request
from sdk.models import (
    FundPurpose,
    FundRequest,
    FundRequestEvent,
    FundRequestIn,
    FundRequestUpdate,
    FundState,
    FundTransition,
    Page,
)

router = APIRouter(prefix="/fund-requests", tags=["fund"])


@contextlib.contextmanager
def fund_errors() -> Iterator[None]:
    """The fund's refusals as problems: unknown request 404, bad reference 422, wrong state 409."""
    try:
        yield
    except service.FundNotFound as exc:
        raise NotFound(str(exc)) from None
    except service.FundInvalid as exc:
        raise Invalid(str(exc)) from None
    except service.FundConflict as exc:
        raise Conflict(str(exc), code=exc.code) from None


def visible_request(session: Session, principal: Principal, request_id: int) -> FundRequestRow:
    """The request, if ``principal`` may see it; else the same 404 as for no such request."""
    row = session.get(FundRequestRow, request_id)
    if row is None or not may_see(principal, row.created_by):
        raise NotFound(f"no fund request {request_id}")
    return row


def as_seen_by(principal: Principal) -> Callable[[FundRequestRow], FundRequest]:
    for_hq = sees_everything(principal)
    return lambda row: as_fund_request(row, for_hq=for_hq)


@router.get("", response_model=Page[FundRequest], summary="Fund requests, newest first")
def list_fund_requests(
    session: DbSession,
    principal: FundReader,
    state: FundState | None = None,
    defender_id: QueryId = None,
    purpose: FundPurpose | None = None,
    alarm_id: QueryId = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[FundRequest]:
    query = select(FundRequestRow)
    if state is not None:
        query = query.where(FundRequestRow.state == state.value)
    if defender_id is not None:
        query = query.where(FundRequestRow.defender_id == defender_id)
    if purpose is not None:
        query = query.where(FundRequestRow.purpose == purpose.value)
    if alarm_id is not None:
        query = query.where(FundRequestRow.alarm_id == alarm_id)
    owner = owner_filter(principal)
    if owner is not None:
        query = query.where(FundRequestRow.created_by == owner)
    return paginate(
        session,
        query,
        FundRequestRow.id,
        as_seen_by(principal),
        limit=limit,
        cursor=cursor,
        newest_first=True,
    )


@router.post(
    "",
    response_model=FundRequest,
    status_code=status.HTTP_201_CREATED,
    summary="Submit a request for support",
)
def submit_fund_request(
    body: FundRequestIn, ctx: Context, session: DbSession, principal: FundWriter
) -> FundRequest:
    knows = sees_everything(principal)
    with fund_errors():
        row = service.submit(
            session, body, principal.actor, ctx.clock.now(), may_know_defenders=knows
        )
    session.commit()
    ctx.on_change()
    return as_seen_by(principal)(row)


@router.get("/{request_id}", response_model=FundRequest)
def get_fund_request(request_id: PathId, session: DbSession, principal: FundReader) -> FundRequest:
    return as_seen_by(principal)(visible_request(session, principal, request_id))


@router.patch(
    "/{request_id}",
    response_model=FundRequest,
    summary="Change a request while it is still submitted",
)
def edit_fund_request(
    request_id: PathId,
    body: FundRequestUpdate,
    ctx: Context,
    session: DbSession,
    principal: FundWriter,
) -> FundRequest:
    visible_request(session, principal, request_id)
    with fund_errors():
        row = service.edit(session, request_id, body, principal.actor, ctx.clock.now())
    session.commit()
    ctx.on_change()
    return as_seen_by(principal)(row)


@router.post(
    "/{request_id}/transitions",
    response_model=FundRequest,
    summary="Move a request in review: under_review, approved, rejected, disbursed",
)
def transition_fund_request(
    request_id: PathId,
    body: FundTransition,
    ctx: Context,
    session: DbSession,
    principal: FundReviewer,
) -> FundRequest:
    with fund_errors():
        row = service.transition(
            session, request_id, body.state, body.note, principal.actor, ctx.clock.now()
        )
    session.commit()
    ctx.on_change()
    return as_fund_request(row)


@router.get(
    "/{request_id}/history",
    response_model=list[FundRequestEvent],
    summary="The request's audit trail, oldest first",
)
def fund_request_history(
    request_id: PathId, session: DbSession, principal: FundReader
) -> list[FundRequestEvent]:
    visible_request(session, principal, request_id)
    with fund_errors():
        rows = service.history(session, request_id)
    return [as_fund_event(row, actor_as_seen(principal, row.actor)) for row in rows]
