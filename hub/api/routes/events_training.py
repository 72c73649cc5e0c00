"""``/v1/events/{id}/training``: training mode — training wristbands and their test alarms.

Kits are real devices with broker accounts: their passwords and signing keys are in the response
that hands them out and nowhere else, and only operations roles (HQ) may hand them out, end
training or raise a training alarm. A training wristband's alarms reach only its participant,
whatever it sends (``hub.recipients``). Without operations rights, a caller sees the training's
state and the kits of its own registrations (it cannot make defender registrations, so none).
"""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlmodel import Session

from hub.api.routes._common import Context, DbSession, EventsReader, OperationsWriter, PathId
from hub.api.routes.events import conference_errors, event_of
from hub.api.tokens import Principal
from hub.api.views import alarm_view
from hub.api.visibility import may_see
from hub.conference import training
from hub.conference.tables import ConferenceRegistration
from hub.models import Alarm as AlarmRow
from sdk.models import Alarm, Training, TrainingAlarmIn, TrainingKit

router = APIRouter(prefix="/events", tags=["events"])


def as_training(
    session: Session,
    event_id: int,
    handed: list[training.Kit] | None = None,
    principal: Principal | None = None,
) -> Training:
    """The training's state with its kits (only those of registrations ``principal`` may see)."""
    event = event_of(session, event_id)
    session.refresh(event)  # the training functions commit on their own sessions
    kits = handed if handed is not None else training.kits(session, event_id)
    if principal is not None:
        kits = [kit for kit in kits if _visible(session, principal, kit.registration_id)]
    return Training(
        event_id=event_id,
        active=event.training_active,
        kits=[
            TrainingKit(
                registration_id=kit.registration_id,
                device_id=kit.device_id,
                password=kit.password,
                key=kit.key,
            )
            for kit in kits
        ],
    )


def _visible(session: Session, principal: Principal, registration_id: int) -> bool:
    row = session.get(ConferenceRegistration, registration_id)
    return row is not None and may_see(principal, row.created_by)


@router.get("/{event_id}/training", response_model=Training, summary="Training mode and kits")
def get_training(event_id: PathId, session: DbSession, principal: EventsReader) -> Training:
    return as_training(session, event_id, principal=principal)


@router.post(
    "/{event_id}/training",
    response_model=Training,
    status_code=status.HTTP_201_CREATED,
    summary="Start training: a wristband for each defender without one (passwords shown once; "
    "operations roles only)",
)
def start_training(
    event_id: PathId, ctx: Context, session: DbSession, _: OperationsWriter
) -> Training:
    event_of(session, event_id)
    with conference_errors():
        kits = training.start_training(ctx.engine, event_id, ctx.broker_data_dir)
    return as_training(session, event_id, kits)


@router.delete(
    "/{event_id}/training",
    response_model=Training,
    summary="End training: every training wristband stops working",
)
def end_training(
    event_id: PathId, ctx: Context, session: DbSession, _: OperationsWriter
) -> Training:
    event_of(session, event_id)
    with conference_errors():
        training.end_training(ctx.engine, event_id, ctx.broker_data_dir)
    return as_training(session, event_id)


@router.post(
    "/{event_id}/training/alarms",
    response_model=Alarm,
    status_code=status.HTTP_201_CREATED,
    summary="Run a test alarm from a participant's training wristband",
)
def training_alarm(
    event_id: PathId,
    body: TrainingAlarmIn,
    ctx: Context,
    session: DbSession,
    principal: OperationsWriter,
) -> Alarm:
    with conference_errors():
        alarm_pk = training.run_training_alarm(
            ctx.engine,
            ctx.lifecycle,
            ctx.clock,
            event_id,
            body.registration_id,
            principal.actor,
        )
    ctx.on_change()
    row = session.get(AlarmRow, alarm_pk)
    assert row is not None
    return alarm_view(row)
