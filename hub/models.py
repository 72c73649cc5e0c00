"""Database tables. Every alarm, every delivery and every refused message is a row.

Times are timezone-aware UTC (``utc_now()``).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utc_now() -> datetime:
    return datetime.now(UTC)


class AlarmState(enum.StrEnum):
    RECEIVED = "received"
    NOTIFIED = "notified"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class Defender(SQLModel, table=True):
    """A person who wears a wristband."""

    id: int | None = Field(default=None, primary_key=True)
    name: str
    language: str = "en"
    timezone: str = "UTC"
    created_at: datetime = Field(default_factory=utc_now)


class Device(SQLModel, table=True):
    """A wristband. ``id`` is its MQTT username, client id and topic segment."""

    id: str = Field(primary_key=True, max_length=64)
    defender_id: int = Field(foreign_key="defender.id", index=True)
    active: bool = True
    registered_at: datetime = Field(default_factory=utc_now)
    last_seen_at: datetime | None = None
    online: bool | None = None
    battery: int | None = None
    last_seq: int | None = None


class Contact(SQLModel, table=True):
    """Someone to notify. ``defender_id`` None means HQ: told of every alarm and refused message."""

    id: int | None = Field(default=None, primary_key=True)
    defender_id: int | None = Field(default=None, foreign_key="defender.id", index=True)
    name: str
    channel_url: str = Field(description="Notifier URL; holds credentials, never logged.")
    language: str = "en"
    active: bool = True


class Alarm(SQLModel, table=True):
    """One alarm as the device sent it; unique per (device, device alarm id)."""

    __table_args__ = (UniqueConstraint("device_id", "alarm_id", name="uq_alarm_device_alarm_id"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="device.id", index=True)
    defender_id: int = Field(foreign_key="defender.id", index=True)
    alarm_id: str = Field(max_length=64)
    kind: str
    state: str = AlarmState.RECEIVED.value
    device_ts: datetime
    seq: int
    lat: float | None = None
    lon: float | None = None
    accuracy_m: float | None = None
    fix_ts: datetime | None = None
    battery: int | None = None
    received_at: datetime = Field(default_factory=utc_now, index=True)
    copies_received: int = 1


class AlarmEvent(SQLModel, table=True):
    """The alarm's timeline: who or what did what, when."""

    id: int | None = Field(default=None, primary_key=True)
    alarm_pk: int = Field(foreign_key="alarm.id", index=True)
    at: datetime = Field(default_factory=utc_now)
    kind: str
    actor: str = "hub"
    detail: str = ""


class Delivery(SQLModel, table=True):
    """One message to one recipient on one channel: the outbox row and its result."""

    __table_args__ = (
        UniqueConstraint("alarm_pk", "contact_id", name="uq_delivery_alarm_contact"),
        UniqueConstraint("rejected_pk", "contact_id", name="uq_delivery_rejected_contact"),
    )

    id: int | None = Field(default=None, primary_key=True)
    alarm_pk: int | None = Field(default=None, foreign_key="alarm.id", index=True)
    rejected_pk: int | None = Field(default=None, foreign_key="rejectedmessage.id", index=True)
    contact_id: int = Field(foreign_key="contact.id")
    recipient: str
    channel_url: str
    channel_masked: str
    language: str = "en"
    title: str
    body: str
    short: str
    status: str = Field(default=DeliveryStatus.PENDING.value, index=True)
    attempts: int = 0
    detail: str = ""
    created_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime | None = None


class RejectedMessage(SQLModel, table=True):
    """A message the hub could not accept, kept whole with the reason, for HQ to review."""

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(default_factory=utc_now, index=True)
    topic: str
    device_id: str | None = Field(default=None, description="As claimed by the topic.")
    channel: str | None = None
    reason: str
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    payload_size: int
    reviewed_at: datetime | None = None
