"""HQ actions on an alarm: acknowledge, verify, escalate, resolve, mark false.

Each goes through ``hub.actions.AlarmActions``, exactly as ``natalia alarm ...`` does, with the
token's actor (``api:NAME``) in the timeline; an optional note is recorded with it. An action
that does not fit the alarm's state (resolving a closed alarm) is a 409. The messages an action
queues are sent by the running hub at once: each action wakes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter
from sqlmodel import Session

from hub.actions import AlarmActions
from hub.api.context import ApiContext
from hub.api.routes._common import (
    AlarmActor,
    Context,
    DbSession,
    PathId,
    domain_errors,
    get_or_404,
)
from hub.api.tokens import Principal
from hub.api.views import alarm_ref, alarm_view
from hub.models import Alarm as AlarmRow
from sdk.models import Alarm, AlarmAction, EscalationResult

router = APIRouter(prefix="/alarms/{alarm_id}", tags=["alarms"])

T = TypeVar("T")
#: (actions, alarm reference, actor, note) -> result
Action = Callable[[AlarmActions, str, str, str], T]

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The alarm's state does not allow this (e.g. it is closed)"}
}


def _act(
    ctx: ApiContext,
    session: Session,
    alarm_id: int,
    principal: Principal,
    body: AlarmAction | None,
    action: Action[T],
) -> tuple[AlarmRow, T]:
    row = get_or_404(session, AlarmRow, alarm_id, "alarm")
    actions = AlarmActions(ctx.engine, ctx.lifecycle, ctx.clock)
    with domain_errors():
        result = action(actions, alarm_ref(alarm_id), principal.actor, body.note if body else "")
    ctx.on_change()  # send what the action queued now, not at the hub's next round
    session.refresh(row)
    return row, result


@router.post("/acknowledge", response_model=Alarm, responses=_CONFLICT)
def acknowledge(
    alarm_id: PathId,
    ctx: Context,
    session: DbSession,
    principal: AlarmActor,
    body: AlarmAction | None = None,
) -> Alarm:
    """HQ is on it: the wristband is told someone is coming, HQ colleagues are told who."""
    row, _ = _act(ctx, session, alarm_id, principal, body, AlarmActions.acknowledge)
    return alarm_view(row)


@router.post("/verify", response_model=Alarm, responses=_CONFLICT)
def verify(
    alarm_id: PathId,
    ctx: Context,
    session: DbSession,
    principal: AlarmActor,
    body: AlarmAction | None = None,
) -> Alarm:
    """HQ confirmed the alarm is real: stages that wait for verification start."""
    row, _ = _act(ctx, session, alarm_id, principal, body, AlarmActions.verify)
    return alarm_view(row)


@router.post("/escalate", response_model=EscalationResult, responses=_CONFLICT)
def escalate(
    alarm_id: PathId,
    ctx: Context,
    session: DbSession,
    principal: AlarmActor,
    body: AlarmAction | None = None,
) -> EscalationResult:
    """Run every stage still waiting for its delay now (not those waiting for verification)."""
    row, queued = _act(ctx, session, alarm_id, principal, body, AlarmActions.escalate)
    return EscalationResult(alarm=alarm_view(row), queued=queued)


@router.post("/resolve", response_model=Alarm, responses=_CONFLICT)
def resolve(
    alarm_id: PathId,
    ctx: Context,
    session: DbSession,
    principal: AlarmActor,
    body: AlarmAction | None = None,
) -> Alarm:
    """Close the alarm: timers stop; the wristband and everyone told are told it is over."""
    row, _ = _act(ctx, session, alarm_id, principal, body, AlarmActions.resolve)
    return alarm_view(row)


@router.post("/false-alarm", response_model=Alarm, responses=_CONFLICT)
def false_alarm(
    alarm_id: PathId,
    ctx: Context,
    session: DbSession,
    principal: AlarmActor,
    body: AlarmAction | None = None,
) -> Alarm:
    """Close the alarm as a false alarm; everyone told is told so."""
    row, _ = _act(ctx, session, alarm_id, principal, body, AlarmActions.false_alarm)
    return alarm_view(row)
