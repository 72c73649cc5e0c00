"""Defenders' Days tables. Times are stored as UTC (see ``hub.models``); dates are the event's
own calendar days.

A registration's ``security_considerations`` are sensitive (who may be watching a participant,
what must not be published): never logged, never in a ``repr``.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Index, Text, text
from sqlmodel import Field, SQLModel

from hub.models import Role, utc_now


class RegistrationStatus(enum.StrEnum):
    REGISTERED = "registered"
    CANCELLED = "cancelled"


#: ``Delivery.kind`` of an announcement to a registration (``Delivery.role`` is "participant").
ANNOUNCEMENT_KIND = "announcement"
PARTICIPANT_ROLE = Role.PARTICIPANT.value


class ConferenceEvent(SQLModel, table=True):
    """One Defenders' Days event. ``training_active``: its training wristbands work."""

    __tablename__ = "conference_event"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    starts_on: date = Field(index=True)
    ends_on: date
    location: str = Field(default="", max_length=200)
    description: str = Field(default="", sa_type=Text)
    training_active: bool = False
    created_at: datetime = Field(default_factory=utc_now)
    created_by: str = Field(default="", max_length=200)


def event_pk(event: ConferenceEvent) -> int:
    assert event.id is not None, "the event must be stored before its id is used"
    return event.id


class ConferenceSession(SQLModel, table=True):
    """A session or a training slot within the event's dates."""

    __tablename__ = "conference_session"

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="conference_event.id", index=True)
    title: str = Field(max_length=200)
    kind: str = "session"
    starts_at: datetime
    ends_at: datetime
    room: str = Field(default="", max_length=200)
    description: str = Field(default="", sa_type=Text)


class ConferenceRegistration(SQLModel, table=True):
    """A defender (``defender_id``) or a guest at an event; cancelled ones stay, for the record.

    A defender holds at most one active registration per event (a partial unique index, so a
    cancelled one does not stop them registering again).
    """

    __tablename__ = "conference_registration"
    __table_args__ = (
        Index(
            "uq_conference_registration_defender",
            "event_id",
            "defender_id",
            unique=True,
            sqlite_where=text("status = 'registered' AND defender_id IS NOT NULL"),
            postgresql_where=text("status = 'registered' AND defender_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="conference_event.id", index=True)
    kind: str
    defender_id: int | None = Field(default=None, foreign_key="defender.id", index=True)
    name: str = Field(max_length=200)
    channel_url: str | None = Field(
        default=None, repr=False, description="Notifier URL for announcements; never logged."
    )
    language: str = "en"
    visa_letter: bool = False
    travel_support: bool = False
    security_considerations: str = Field(default="", sa_type=Text, repr=False)
    status: str = Field(default=RegistrationStatus.REGISTERED.value, max_length=20)
    training_device_id: str | None = Field(
        default=None, foreign_key="device.id", max_length=64, description="The training kit."
    )
    created_at: datetime = Field(default_factory=utc_now)
    created_by: str = Field(default="", max_length=200)
    cancelled_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status == RegistrationStatus.REGISTERED.value


class ConferenceAnnouncement(SQLModel, table=True):
    """A message to every registration of an event; its deliveries are ordinary outbox rows
    keyed ``announcement:<id>:registration:<registration id>``."""

    __tablename__ = "conference_announcement"

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="conference_event.id", index=True)
    title: str = Field(max_length=200)
    body: str = Field(sa_type=Text)
    short: str = Field(max_length=480)
    created_at: datetime = Field(default_factory=utc_now)
    created_by: str = Field(default="", max_length=200)
    recipients: int = 0
