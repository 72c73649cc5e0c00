"""The webhooks' tables: subscriptions, their position in each event source, and deliveries.

A delivery row is the outbox: one per (subscription, event), unique, so creating them again —
after a restart, or by a second hub on the same PostgreSQL — adds nothing. Its ``body`` is the
exact JSON sent, built once, so every retry sends the same bytes (only the signature's timestamp
changes).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.models import utc_now
from hub.sealing import SealedText


class WebhookDeliveryStatus(enum.StrEnum):
    """pending -> sending -> delivered | retrying (-> sending ...) | dead | cancelled."""

    PENDING = "pending"
    SENDING = "sending"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    DEAD = "dead"  #: attempts or deadline used up, or the receiver answered 410 Gone
    CANCELLED = "cancelled"  #: the webhook was deleted before this was delivered


#: Rows that may be claimed (``retrying`` only once ``next_try_at`` has come).
CLAIMABLE = (WebhookDeliveryStatus.PENDING.value, WebhookDeliveryStatus.RETRYING.value)


class WebhookSubscription(SQLModel, table=True):
    """Where to POST which events. ``secret`` signs them: it has to be kept to sign, and it is
    shown once, when the subscription is created."""

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2000, description="May hold credentials: shown masked.")
    secret: str = Field(  # sealed (hub/sealing.py)
        sa_column=Column(SealedText("webhooksubscription.secret"), nullable=False), repr=False
    )
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str = Field(default="", max_length=500)
    active: bool = Field(default=True, index=True)
    created_at: datetime = Field(default_factory=utc_now)
    created_by: str = Field(default="", max_length=200)
    created_by_token: int | None = Field(
        default=None,
        index=True,
        description="The API token that created it: revoking the "
        "token deactivates the subscription.",
    )
    deactivated_at: datetime | None = None
    deactivated_reason: str = Field(default="", max_length=500)


class WebhookCursor(SQLModel, table=True):
    """How far a subscription has been fanned out in one event source (its last row id)."""

    webhook_id: int = Field(foreign_key="webhooksubscription.id", primary_key=True)
    source: str = Field(primary_key=True, max_length=50)
    position: int = 0


class WebhookDelivery(SQLModel, table=True):
    """One event to one subscription, and what became of it."""

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_webhookdelivery_webhook_event"),
    )

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(foreign_key="webhooksubscription.id", index=True)
    event_id: str = Field(max_length=200)
    event_type: str = Field(max_length=200)
    body: str = Field(  # sealed: it holds positions (hub/sealing.py)
        sa_column=Column(SealedText("webhookdelivery.body", ("",)), nullable=False), repr=False
    )
    status: str = Field(default=WebhookDeliveryStatus.PENDING.value, index=True)
    attempts: int = 0
    response_status: int | None = None
    detail: str = Field(default="", max_length=1000, description="The last attempt's result.")
    created_at: datetime = Field(default_factory=utc_now)
    next_try_at: datetime | None = Field(default=None, index=True)
    deadline_at: datetime | None = Field(default=None, description="Set at the first claim.")
    delivered_at: datetime | None = None
    claimed_at: datetime | None = Field(default=None, description="A lease while sending.")
    claimed_by: str | None = Field(default=None, max_length=100)
