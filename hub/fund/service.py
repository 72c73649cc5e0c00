"""The fund's rules: submit, edit while submitted, move through review; each with its audit event
and its messages in the same transaction.

The functions change rows in the given session and flush; the caller commits (one commit for the
change, its audit event and its outbox rows) and then wakes the hub's dispatcher.

Two reviewers acting on one request at the same moment must not both win. The request's row is
read with ``SELECT ... FOR UPDATE`` (PostgreSQL: the second waits, then sees the first's state)
and written with a compare-and-set on its state (``UPDATE ... WHERE state = <the state read>``:
SQLite ignores FOR UPDATE, and its single writer makes the second's UPDATE wait and then match
no row). Either way the loser gets :class:`FundConflict`, and nothing of its change is kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col, select, update

from hub.fund.changes import changed_columns, hundredths, optional_hundredths
from hub.fund.errors import FundConflict, FundError, FundInvalid, FundNotFound
from hub.fund.notify import notify
from hub.fund.tables import FundAction, FundRequest, FundRequestEvent
from hub.models import Alarm, Defender
from sdk.models import FundRequestIn, FundRequestUpdate, FundState

__all__ = [
    "TRANSITIONS",
    "FundConflict",
    "FundError",
    "FundInvalid",
    "FundNotFound",
    "allowed_next",
    "edit",
    "fund_events_after",
    "history",
    "reference_problem",
    "submit",
    "transition",
]

#: The review: from each state, the states it may move to. Rejected and disbursed are final.
TRANSITIONS: dict[FundState, frozenset[FundState]] = {
    FundState.SUBMITTED: frozenset({FundState.UNDER_REVIEW, FundState.REJECTED}),
    FundState.UNDER_REVIEW: frozenset({FundState.APPROVED, FundState.REJECTED}),
    FundState.APPROVED: frozenset({FundState.DISBURSED}),
    FundState.REJECTED: frozenset(),
    FundState.DISBURSED: frozenset(),
}


def submit(
    session: Session,
    new: FundRequestIn,
    actor: str,
    now: datetime,
    *,
    may_know_defenders: bool = True,
) -> FundRequest:
    """A new request, ``submitted``, with its ``created`` event and messages queued.

    The defender and alarm it names are checked. A submitter who ``may_know_defenders`` (HQ)
    gets the problem as :class:`FundInvalid`. Any other (a partner system) must not learn from
    the answer whether defender 7 exists or whether alarm 12 is theirs: its request is kept as
    sent, the problem recorded for HQ (``reference_problem``), and only HQ is told of it.
    """
    problem = reference_problem(session, new.defender_id, new.alarm_id)
    if problem is not None and may_know_defenders:
        raise FundInvalid(problem)
    request = FundRequest(
        defender_id=new.defender_id,
        alarm_id=new.alarm_id,
        purpose=new.purpose.value,
        amount_hundredths=hundredths("amount", new.amount),
        currency=new.currency,
        startup_grant_hundredths=optional_hundredths("startup_grant", new.startup_grant),
        description=new.description,
        state=FundState.SUBMITTED.value,
        created_at=now,
        updated_at=now,
        created_by=actor,
        reference_problem=problem,
    )
    session.add(request)
    session.flush()
    _record(session, request, actor, now, FundAction.CREATED, to_state=FundState.SUBMITTED)
    return request


def edit(
    session: Session, request_id: int, changes: FundRequestUpdate, actor: str, now: datetime
) -> FundRequest:
    """Apply the fields ``changes`` sets (an explicit null start-up grant removes it).

    Only while submitted: once review has begun, what is reviewed must not change. Nothing
    changed means no event and no message.
    """
    request = _locked(session, request_id)
    if request.state != FundState.SUBMITTED.value:
        raise FundConflict(
            f"request {request_id} is {request.state}: it can be changed only while submitted",
            code="not_editable",
        )
    values, notes = changed_columns(request, changes)
    if not values:
        return request
    _compare_and_set(session, request, FundState.SUBMITTED, {**values, "updated_at": now})
    _record(session, request, actor, now, FundAction.UPDATED, note="; ".join(notes))
    return request


def transition(
    session: Session, request_id: int, to_state: FundState, note: str, actor: str, now: datetime
) -> FundRequest:
    """Move the request to ``to_state`` if the review allows it from where it is."""
    request = _locked(session, request_id)
    current = FundState(request.state)
    if to_state not in TRANSITIONS[current]:
        raise FundConflict(
            _not_allowed(request_id, current, to_state), code="transition_not_allowed"
        )
    if request.reference_problem and to_state in (FundState.APPROVED, FundState.DISBURSED):
        raise FundConflict(
            f"request {request_id} cannot be {to_state.value}: {request.reference_problem}; "
            "reject it (the submitter can send a corrected request)",
            code="reference_problem",
        )
    _compare_and_set(session, request, current, {"state": to_state.value, "updated_at": now})
    _record(session, request, actor, now, FundAction.STATE, current, to_state, note=note.strip())
    return request


def history(session: Session, request_id: int) -> list[FundRequestEvent]:
    """The request's audit trail, oldest first."""
    if session.get(FundRequest, request_id) is None:
        raise FundNotFound(f"no fund request {request_id}")
    query = (
        select(FundRequestEvent)
        .where(FundRequestEvent.request_id == request_id)
        .order_by(col(FundRequestEvent.id))
    )
    return list(session.exec(query))


def fund_events_after(session: Session, after_id: int, limit: int) -> list[FundRequestEvent]:
    """Audit events with an id above ``after_id``, oldest first: a feed for webhooks.

    A consumer keeps the last id it handled. On PostgreSQL an id is taken at insert, not at
    commit: a transaction that commits late can add an id below one already seen, so a consumer
    that must miss nothing re-reads a short window behind its last id (and de-duplicates by id).
    """
    query = (
        select(FundRequestEvent)
        .where(col(FundRequestEvent.id) > after_id)
        .order_by(col(FundRequestEvent.id))
        .limit(limit)
    )
    return list(session.exec(query))


def allowed_next(state: FundState) -> list[FundState]:
    return sorted(TRANSITIONS[state], key=list(FundState).index)


# -- internals -----------------------------------------------------------------------------------


def reference_problem(session: Session, defender_id: int, alarm_id: int | None) -> str | None:
    """Why the defender and alarm a request names do not hold; None when they do."""
    if session.get(Defender, defender_id) is None:
        return f"no defender {defender_id}"
    if alarm_id is None:
        return None
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        return f"no alarm {alarm_id}"
    if alarm.defender_id != defender_id:
        return f"alarm {alarm_id} is not an alarm of defender {defender_id}"
    return None


def _locked(session: Session, request_id: int) -> FundRequest:
    """The request as committed now, locked for this transaction where the database can."""
    query = (
        select(FundRequest)
        .where(FundRequest.id == request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    request = session.exec(query).first()
    if request is None:
        raise FundNotFound(f"no fund request {request_id}")
    return request


def _compare_and_set(
    session: Session, request: FundRequest, expected: FundState, values: dict[str, Any]
) -> None:
    """Write ``values`` only if the request is still ``expected``; else :class:`FundConflict`."""
    result = cast(
        CursorResult[Any],
        session.execute(
            update(FundRequest)
            .where(col(FundRequest.id) == request.id, col(FundRequest.state) == expected.value)
            .values(**values)
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount != 1:
        raise FundConflict(
            f"request {request.id} was changed by someone else at the same moment; "
            "reload it and try again",
            code="changed_meanwhile",
        )
    session.refresh(request)


def _record(
    session: Session,
    request: FundRequest,
    actor: str,
    now: datetime,
    action: FundAction,
    from_state: FundState | None = None,
    to_state: FundState | None = None,
    note: str = "",
) -> FundRequestEvent:
    assert request.id is not None
    event = FundRequestEvent(
        request_id=request.id,
        at=now,
        actor=actor,
        action=action.value,
        from_state=from_state.value if from_state else None,
        to_state=to_state.value if to_state else None,
        note=note,
    )
    session.add(event)
    session.flush()
    notify(session, request, event)
    return event


def _not_allowed(request_id: int, current: FundState, wanted: FundState) -> str:
    allowed = allowed_next(current)
    if not allowed:
        return (
            f"request {request_id} is {current.value}, which is final: "
            f"it cannot become {wanted.value}"
        )
    names = " or ".join(state.value for state in allowed)
    return f"request {request_id} is {current.value}: it can become {names}, not {wanted.value}"
