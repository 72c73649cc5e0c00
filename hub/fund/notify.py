"""Messages about fund requests: HQ hears of every change; the defender's trusted contacts hear
of the submission and of each decision (approved, rejected, paid out).

Messages are outbox rows (``hub.outbox.queue``) in the transaction of the change, sent by the
hub's dispatcher like any other delivery (retries, fallback channels, dead letters to HQ). They
belong to no alarm (``alarm_pk`` is None), so they never hold an alarm's "notified" back. Each is
keyed by request, audit event and recipient (``fund:12:40:contact:3``): one audit event never
queues the same recipient twice. They say the request's reference, purpose, amount and state;
never a position, never the reviewer's note or name (those stay in the audit trail).
"""

from __future__ import annotations

from sqlmodel import Session

from hub.fund.tables import FundAction, FundRequest, FundRequestEvent, aware
from hub.messages import MessageEvent, MessageFacts
from hub.models import Defender, Delivery, Role
from hub.outbox import queue
from hub.recipients import Target, contacts_with_roles
from sdk.models import FundState

#: States the defender's trusted contacts are told about.
DECISIONS = frozenset({FundState.APPROVED, FundState.REJECTED, FundState.DISBURSED})
#: ``Delivery.key`` of fund messages starts with this (see ``hub.deadletter.short_reference``).
KEY_PREFIX = "fund:"


def delivery_key(request_id: int, event_id: int, target: Target) -> str:
    return f"{KEY_PREFIX}{request_id}:{event_id}:{target.key}"


def message_event(event: FundRequestEvent) -> MessageEvent:
    if event.action == FundAction.CREATED.value:
        return MessageEvent.FUND_SUBMITTED
    if event.action == FundAction.UPDATED.value:
        return MessageEvent.FUND_UPDATED
    return MessageEvent.FUND_STATE


def roles_told(request: FundRequest, event: FundRequestEvent) -> tuple[Role, ...]:
    """HQ always; trusted contacts on submission and decisions, unless the request names a
    defender or alarm that does not hold (then it may not be theirs at all)."""
    if request.reference_problem:
        return (Role.HQ,)
    if event.action == FundAction.CREATED.value:
        return (Role.HQ, Role.TRUSTED)
    if event.action == FundAction.STATE.value and event.to_state in DECISIONS:
        return (Role.HQ, Role.TRUSTED)
    return (Role.HQ,)


def facts_for(
    request: FundRequest, defender: Defender | None, event: FundRequestEvent
) -> MessageFacts:
    """What a fund message may say (the alarm-only facts are left empty)."""
    at = aware(event.at)
    return MessageFacts(
        ref=request.ref,
        kind="",
        defender=defender.name if defender else f"defender {request.defender_id} (unknown)",
        timezone=defender.timezone if defender else "UTC",
        device_id="",
        device_ts=at,
        lat=None,
        lon=None,
        accuracy_m=None,
        fix_ts=None,
        battery=None,
        at=at,
        purpose=request.purpose,
        state=request.state,
        amount=f"{request.amount} {request.currency}",
    )


def notify(session: Session, request: FundRequest, event: FundRequestEvent) -> list[Delivery]:
    """Queue the messages about ``event`` (already flushed); returns the new outbox rows."""
    assert request.id is not None and event.id is not None
    defender = session.get(Defender, request.defender_id)
    facts = facts_for(request, defender, event)
    what = message_event(event)
    queued = []
    roles = roles_told(request, event)
    owner = request.defender_id if defender is not None else None
    for target in contacts_with_roles(session, owner, roles):
        key = delivery_key(request.id, event.id, target)
        delivery = queue(session, key, target, what, facts)
        if delivery is not None:
            queued.append(delivery)
    return queued
