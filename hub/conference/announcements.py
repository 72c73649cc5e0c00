"""Announcements: one outbox row per active registration with a channel.

They are ordinary ``Delivery`` rows (kind ``announcement``, no alarm, ``registration_id`` set),
so the running hub's dispatcher sends them through the same notifier plugins, with the same
timeouts, retries and dead-letter alert to HQ as alarm messages; and a cancelled registration
gets none of them any more, however long they waited (``hub.recipients.recipient_stopped``).
A registration has one channel: when it fails for good, HQ is told who was not reached. The
text is sent as HQ wrote it, in no other language.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from hub.conference.tables import (
    ANNOUNCEMENT_KIND,
    PARTICIPANT_ROLE,
    ConferenceAnnouncement,
    ConferenceEvent,
    ConferenceRegistration,
    RegistrationStatus,
    event_pk,
)
from hub.models import Delivery
from hub.plugin_api import mask_url
from sdk.models import AnnouncementIn


def delivery_key(announcement_id: int, registration_id: int) -> str:
    return f"{ANNOUNCEMENT_KIND}:{announcement_id}:registration:{registration_id}"


def announce(
    session: Session,
    event: ConferenceEvent,
    body: AnnouncementIn,
    actor: str,
    now: datetime,
    made_by: str | None = None,
) -> ConferenceAnnouncement:
    """Store the announcement and queue it, in one commit; the caller wakes the dispatcher.

    ``made_by``: only the registrations that actor made (a partner system's text never reaches
    participants HQ registered, and its count tells nothing of them)."""
    announcement = ConferenceAnnouncement(
        event_id=event_pk(event),
        title=body.title,
        body=body.body,
        short=body.short or body.title,
        created_at=now,
        created_by=actor,
    )
    session.add(announcement)
    session.flush()
    assert announcement.id is not None
    query = select(ConferenceRegistration).where(
        ConferenceRegistration.event_id == event.id,
        ConferenceRegistration.status == RegistrationStatus.REGISTERED.value,
        col(ConferenceRegistration.channel_url).is_not(None),
    )
    if made_by is not None:
        query = query.where(ConferenceRegistration.created_by == made_by)
    recipients = session.exec(query.order_by(col(ConferenceRegistration.id))).all()
    for registration in recipients:
        assert registration.id is not None and registration.channel_url is not None
        session.add(
            Delivery(
                key=delivery_key(announcement.id, registration.id),
                registration_id=registration.id,
                role=PARTICIPANT_ROLE,
                kind=ANNOUNCEMENT_KIND,
                recipient=registration.name,
                channel_url=registration.channel_url,
                channel_masked=mask_url(registration.channel_url),
                language=registration.language,
                title=announcement.title,
                body=announcement.body,
                short=announcement.short,
                created_at=now,
            )
        )
    announcement.recipients = len(recipients)
    session.add(announcement)
    session.commit()
    session.refresh(announcement)
    return announcement


def announcements_of(session: Session, event_id: int) -> list[ConferenceAnnouncement]:
    query = (
        select(ConferenceAnnouncement)
        .where(ConferenceAnnouncement.event_id == event_id)
        .order_by(col(ConferenceAnnouncement.id))
    )
    return list(session.exec(query))
