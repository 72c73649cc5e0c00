"""``/v1/events``: Defenders' Days events, their sessions, registrations and announcements.

Training mode (kits and training alarms) is in ``events_training``.

Who attends is itself dangerous to know. A caller without operations rights (the integration
role: the conference's system) sees and announces to only the registrations it made itself,
registers guests by name, and cannot link a registration to a defender: only HQ registers a
defender (by ``defender_id``), so no answer tells a stranger which defender ids exist or whose
name they carry (``hub.api.visibility``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, status
from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from hub.api.auth import Forbidden
from hub.api.errors import Conflict, Invalid, NotFound
from hub.api.pagination import (
    BadCursor,
    Cursor,
    Limit,
    decode_cursor,
    encode_cursor,
    paginate,
)
from hub.api.permissions import Permission, allows
from hub.api.routes._common import (
    Context,
    DbSession,
    EventsReader,
    EventsWriter,
    PathId,
    check_destinations,
)
from hub.api.tokens import Principal
from hub.api.visibility import actor_as_seen, may_see, owner_filter
from hub.conference import ConferenceConflict, ConferenceError, ConferenceNotFound
from hub.conference import announcements as announcing
from hub.conference import events as service
from hub.conference.events import as_utc
from hub.conference.tables import (
    ConferenceAnnouncement,
    ConferenceEvent,
    ConferenceRegistration,
    ConferenceSession,
)
from hub.plugin_api import InvalidChannelURL, mask_url
from sdk.models import (
    Announcement,
    AnnouncementIn,
    Event,
    EventIn,
    EventSession,
    Needs,
    Page,
    ParticipantKind,
    Registration,
    RegistrationIn,
    SessionIn,
    SessionKind,
)

router = APIRouter(prefix="/events", tags=["events"])


@contextlib.contextmanager
def conference_errors() -> Iterator[None]:
    """Defenders' Days errors as problems: 404, 409 for wrong states, 422 for bad requests."""
    try:
        yield
    except ConferenceNotFound as exc:
        raise NotFound(str(exc)) from None
    except ConferenceConflict as exc:
        raise Conflict(str(exc)) from None
    except (ConferenceError, InvalidChannelURL) as exc:
        raise Invalid(str(exc)) from None


def event_of(session: Session, event_id: int) -> ConferenceEvent:
    with conference_errors():
        return service.get_event(session, event_id)


def visible_registration(
    session: Session, principal: Principal, event_id: int, registration_id: int
) -> ConferenceRegistration:
    """The registration, if ``principal`` may see it; one it may not is "not found" like one
    that does not exist."""
    with conference_errors():
        row = service.get_registration(session, event_id, registration_id)
        if not may_see(principal, row.created_by):
            raise ConferenceNotFound(f"no registration {registration_id} in event {event_id}")
    return row


def as_event(row: ConferenceEvent) -> Event:
    return Event.model_validate(row).model_copy(update={"created_at": as_utc(row.created_at)})


def as_session(row: ConferenceSession) -> EventSession:
    return EventSession(
        id=row.id or 0,
        event_id=row.event_id,
        title=row.title,
        kind=SessionKind(row.kind),
        starts_at=as_utc(row.starts_at),
        ends_at=as_utc(row.ends_at),
        room=row.room,
        description=row.description,
    )


def as_registration(row: ConferenceRegistration) -> Registration:
    """The channel is shown masked: it may hold credentials."""
    return Registration(
        id=row.id or 0,
        event_id=row.event_id,
        kind=ParticipantKind(row.kind),
        defender_id=row.defender_id,
        name=row.name,
        channel=mask_url(row.channel_url) if row.channel_url is not None else None,
        language=row.language,
        needs=Needs(
            visa_letter=row.visa_letter,
            travel_support=row.travel_support,
            security_considerations=row.security_considerations,
        ),
        status=row.status,
        training_device_id=row.training_device_id,
        created_at=as_utc(row.created_at),
    )


def as_announcement(row: ConferenceAnnouncement, principal: Principal) -> Announcement:
    """Without operations rights, HQ's announcements say ``hq``, not who wrote them."""
    return Announcement.model_validate(row).model_copy(
        update={
            "created_at": as_utc(row.created_at),
            "created_by": actor_as_seen(principal, row.created_by),
        }
    )


@router.get("", response_model=Page[Event], summary="Events, soonest first (then lowest id)")
def list_events(
    session: DbSession, _: EventsReader, limit: Limit = 50, cursor: Cursor = None
) -> Page[Event]:
    query: Any = select(ConferenceEvent)
    if cursor is not None:
        last = session.get(ConferenceEvent, decode_cursor(cursor))
        if last is None:  # events are never deleted: not a cursor this hub gave out
            raise BadCursor("this cursor is not valid; use next_cursor from the last page")
        query = query.where(
            or_(
                col(ConferenceEvent.starts_on) > last.starts_on,
                and_(
                    col(ConferenceEvent.starts_on) == last.starts_on,
                    col(ConferenceEvent.id) > last.id,
                ),
            )
        )
    query = query.order_by(col(ConferenceEvent.starts_on), col(ConferenceEvent.id))
    rows = list(session.exec(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].id or 0) if more and rows else None
    return Page[Event](items=[as_event(row) for row in rows], next_cursor=next_cursor)


@router.post("", response_model=Event, status_code=status.HTTP_201_CREATED)
def create_event(body: EventIn, session: DbSession, principal: EventsWriter) -> Event:
    with conference_errors():
        return as_event(service.create_event(session, body, principal.actor))


@router.get("/{event_id}", response_model=Event)
def get_event(event_id: PathId, session: DbSession, _: EventsReader) -> Event:
    return as_event(event_of(session, event_id))


@router.get(
    "/{event_id}/sessions", response_model=list[EventSession], summary="Sessions by start time"
)
def list_sessions(event_id: PathId, session: DbSession, _: EventsReader) -> list[EventSession]:
    event_of(session, event_id)
    return [as_session(row) for row in service.sessions_of(session, event_id)]


@router.post(
    "/{event_id}/sessions", response_model=EventSession, status_code=status.HTTP_201_CREATED
)
def add_session(
    event_id: PathId, body: SessionIn, session: DbSession, _: EventsWriter
) -> EventSession:
    event = event_of(session, event_id)
    with conference_errors():
        return as_session(service.add_session(session, event, body))


@router.get("/{event_id}/registrations", response_model=Page[Registration])
def list_registrations(
    event_id: PathId,
    session: DbSession,
    principal: EventsReader,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Registration]:
    """Every registration, cancelled ones included, lowest id first (without operations rights:
    those this token's name made)."""
    event_of(session, event_id)
    query = select(ConferenceRegistration).where(ConferenceRegistration.event_id == event_id)
    owner = owner_filter(principal)
    if owner is not None:
        query = query.where(ConferenceRegistration.created_by == owner)
    return paginate(
        session,
        query,
        ConferenceRegistration.id,
        as_registration,
        limit=limit,
        cursor=cursor,
    )


@router.post(
    "/{event_id}/registrations",
    response_model=Registration,
    status_code=status.HTTP_201_CREATED,
    summary="Register a guest (by name) or, with operations rights, a defender (by defender_id)",
)
def register(
    event_id: PathId,
    body: RegistrationIn,
    ctx: Context,
    session: DbSession,
    principal: EventsWriter,
) -> Registration:
    if body.kind is ParticipantKind.DEFENDER and not allows(
        principal.role, Permission.OPERATIONS_WRITE
    ):  # before any lookup: the same answer whether or not the defender exists
        raise Forbidden(
            "only HQ (operations rights) registers a defender by defender_id; "
            "register the participant as a guest by name"
        )
    event = event_of(session, event_id)
    check_destinations(ctx, body.channel_url)
    with conference_errors():
        row = service.register(session, ctx.registry, event, body, principal.actor)
    return as_registration(row)


@router.get("/{event_id}/registrations/{registration_id}", response_model=Registration)
def get_registration(
    event_id: PathId, registration_id: PathId, session: DbSession, principal: EventsReader
) -> Registration:
    return as_registration(visible_registration(session, principal, event_id, registration_id))


@router.delete(
    "/{event_id}/registrations/{registration_id}",
    response_model=Registration,
    summary="Cancel a registration (it stays listed; its training wristband stops working)",
)
def cancel_registration(
    event_id: PathId,
    registration_id: PathId,
    ctx: Context,
    session: DbSession,
    principal: EventsWriter,
) -> Registration:
    visible_registration(session, principal, event_id, registration_id)
    with conference_errors():
        row = service.cancel_registration(
            ctx.engine,
            event_id,
            registration_id,
            ctx.broker_data_dir,
            ctx.clock.now(),
            principal.actor,
        )
    return as_registration(row)


@router.get("/{event_id}/announcements", response_model=list[Announcement])
def list_announcements(
    event_id: PathId, session: DbSession, principal: EventsReader
) -> list[Announcement]:
    event_of(session, event_id)
    rows = announcing.announcements_of(session, event_id)
    return [as_announcement(row, principal) for row in rows]


@router.post(
    "/{event_id}/announcements",
    response_model=Announcement,
    status_code=status.HTTP_201_CREATED,
    summary="Send a message to every active registration with a channel (without operations "
    "rights: to those this token's name made)",
)
def announce(
    event_id: PathId,
    body: AnnouncementIn,
    ctx: Context,
    session: DbSession,
    principal: EventsWriter,
) -> Announcement:
    event = event_of(session, event_id)
    row = announcing.announce(
        session, event, body, principal.actor, ctx.clock.now(), owner_filter(principal)
    )
    ctx.on_change()
    return as_announcement(row, principal)
