"""Events, their sessions and their registrations.

Who attends an event can itself be dangerous to know: the log gets ids, never names, channels or
needs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from hub.conference.errors import ConferenceConflict, ConferenceError, ConferenceNotFound
from hub.conference.tables import (
    ConferenceEvent,
    ConferenceRegistration,
    ConferenceSession,
    RegistrationStatus,
    event_pk,
)
from hub.conference.training import retire_kits
from hub.deliveries import stop_deliveries_to
from hub.models import Defender
from hub.plugin_manager import NotifierRegistry
from sdk.models import EventIn, ParticipantKind, RegistrationIn, SessionIn

log = logging.getLogger(__name__)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC time; a naive one is taken as UTC (that is also how the database returns
    what it stored)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def get_event(session: Session, event_id: int) -> ConferenceEvent:
    event = session.get(ConferenceEvent, event_id)
    if event is None:
        raise ConferenceNotFound(f"no event {event_id}")
    return event


def get_registration(
    session: Session, event_id: int, registration_id: int
) -> ConferenceRegistration:
    row = session.get(ConferenceRegistration, registration_id)
    if row is None or row.event_id != event_id:
        raise ConferenceNotFound(f"no registration {registration_id} in event {event_id}")
    return row


def create_event(session: Session, body: EventIn, actor: str) -> ConferenceEvent:
    if body.ends_on < body.starts_on:
        raise ConferenceError(
            f"the event ends ({body.ends_on}) before it starts ({body.starts_on})"
        )
    event = ConferenceEvent(**body.model_dump(), created_by=actor)
    session.add(event)
    session.commit()
    session.refresh(event)
    log.info("event %s created by %s", event.id, actor)
    return event


def add_session(session: Session, event: ConferenceEvent, body: SessionIn) -> ConferenceSession:
    """A session within the event's days. Times without an offset are taken as UTC; the days
    are checked in the offset the times were given in (the event's local calendar)."""
    if body.ends_at <= body.starts_at:
        raise ConferenceError("a session must end after it starts (ends_at > starts_at)")
    first, last = body.starts_at.date(), body.ends_at.date()
    if first < event.starts_on or last > event.ends_on:
        raise ConferenceError(
            f"the session ({first} to {last}) is outside the event's days "
            f"({event.starts_on} to {event.ends_on})"
        )
    row = ConferenceSession(
        event_id=event_pk(event),
        title=body.title,
        kind=body.kind.value,
        starts_at=as_utc(body.starts_at),
        ends_at=as_utc(body.ends_at),
        room=body.room,
        description=body.description,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def sessions_of(session: Session, event_id: int) -> list[ConferenceSession]:
    query = (
        select(ConferenceSession)
        .where(ConferenceSession.event_id == event_id)
        .order_by(col(ConferenceSession.starts_at), col(ConferenceSession.id))
    )
    return list(session.exec(query))


def register(
    session: Session,
    registry: NotifierRegistry,
    event: ConferenceEvent,
    body: RegistrationIn,
    actor: str,
) -> ConferenceRegistration:
    """Register a defender (who must exist; their name is used) or a guest (who needs one).

    ``channel_url`` is checked by the notifier that would send to it, as for contacts.
    """
    language = body.language
    if body.kind is ParticipantKind.DEFENDER:
        if body.defender_id is None:
            raise ConferenceError("a defender registration needs defender_id")
        if body.name is not None:
            raise ConferenceError("a defender registration takes the defender's name: omit name")
        defender = session.get(Defender, body.defender_id)
        if defender is None:
            raise ConferenceError(f"no defender {body.defender_id}")
        name = defender.name
        if "language" not in body.model_fields_set:
            language = defender.language
        _check_not_registered(session, event, body.defender_id)
    else:
        if body.defender_id is not None:
            raise ConferenceError("a guest has no defender_id; register defenders as defender")
        if body.name is None:
            raise ConferenceError("a guest registration needs a name")
        name = body.name
    if body.channel_url is not None:
        registry.validate(body.channel_url)
    row = ConferenceRegistration(
        event_id=event_pk(event),
        kind=body.kind.value,
        defender_id=body.defender_id,
        name=name,
        channel_url=body.channel_url,
        language=language,
        visa_letter=body.needs.visa_letter,
        travel_support=body.needs.travel_support,
        security_considerations=body.needs.security_considerations,
        created_by=actor,
    )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # registered by a request running at the same time
        session.rollback()
        raise ConferenceConflict(
            f"defender {body.defender_id} is already registered for event {event.id}"
        ) from None
    session.refresh(row)
    log.info("event %s: registration %s (%s) by %s", event.id, row.id, row.kind, actor)
    return row


def _check_not_registered(session: Session, event: ConferenceEvent, defender_id: int) -> None:
    query = select(ConferenceRegistration.id).where(
        ConferenceRegistration.event_id == event.id,
        ConferenceRegistration.defender_id == defender_id,
        ConferenceRegistration.status == RegistrationStatus.REGISTERED.value,
    )
    found = session.exec(query).first()
    if found is not None:
        raise ConferenceConflict(
            f"defender {defender_id} is already registered for event {event.id} "
            f"(registration {found})"
        )


def cancel_registration(
    engine: Engine,
    event_id: int,
    registration_id: int,
    broker_data_dir: Path | None,
    now: datetime,
    actor: str,
) -> ConferenceRegistration:
    """Cancel (idempotent): from this moment nothing more is sent to the registration —
    announcements and training alarm messages already queued are cancelled — and a training
    wristband stops working."""
    with Session(engine) as session:
        row = get_registration(session, event_id, registration_id)
        if row.active:
            row.status = RegistrationStatus.CANCELLED.value
            row.cancelled_at = now
            session.add(row)
            reason = f"the registration was cancelled by {actor}"
            stop_deliveries_to(session, reason, now, registration_id=registration_id)
            session.commit()
            log.info("event %s: registration %s cancelled by %s", event_id, row.id, actor)
        session.refresh(row)
        kit = row.training_device_id
    if kit is not None:
        retire_kits(engine, [kit], broker_data_dir)
    return row
