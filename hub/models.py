"""Database tables. Every alarm, every delivery and every refused message is a row.

Times are timezone-aware UTC (``utc_now()``). What reveals where someone is — coordinates,
the messages and payloads that carry them — and device keys are sealed (hub/sealing.py): the
database holds them encrypted, the ORM gives them back in clear.

A column that takes a number from a device holds the protocol's whole range of it: ``seq`` goes
up to 2**53-1, so seq columns are BIGINT (PostgreSQL's INTEGER stops at 2**31-1); the other
device numbers (battery, interval_s) are bounded by the protocol far below that.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from hub.sealing import SealedBytes, SealedFloat, SealedText


def utc_now() -> datetime:
    return datetime.now(UTC)


#: What retention leaves of a message that carried a position (stored as is: SQL compares it).
ERASED = "[erased after the retention period]"


def _sealed_float(purpose: str) -> Any:
    return Field(default=None, repr=False, sa_column=Column(SealedFloat(purpose)))


class AlarmState(enum.StrEnum):
    """received -> notified -> acknowledged -> verified -> resolved | false_alarm | cancelled."""

    RECEIVED = "received"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    VERIFIED = "verified"
    RESOLVED = "resolved"
    FALSE_ALARM = "false_alarm"
    CANCELLED = "cancelled"


CLOSED_STATES = frozenset({AlarmState.RESOLVED, AlarmState.FALSE_ALARM, AlarmState.CANCELLED})


class Role(enum.StrEnum):
    """Which group a recipient belongs to; escalation stages name roles."""

    HQ = "hq"  #: HQ duty staff (organisation-wide)
    TRUSTED = "trusted"  #: the defender's trusted contacts
    NEARBY = "nearby"  #: responders near the alarm's position (found, not listed)
    PARTNER = "partner"  #: partner organisations
    EMBASSY = "embassy"
    PRESS = "press"  #: a press list: publicity
    PUBLIC = "public"  #: public channels (X/Twitter, Facebook, Mastodon, Bluesky): publicity
    #: A Defenders' Days participant (announcements, and the training alarms of their own
    #: training wristband); never a stage of an escalation policy.
    PARTICIPANT = "participant"


#: Roles that make an alarm public; used only when the defender allows public broadcast.
PUBLIC_ROLES = frozenset({Role.PRESS, Role.PUBLIC})


class DeliveryStatus(enum.StrEnum):
    """pending -> sending -> sent | retrying (-> sending ...) | failed (moved on) | dead;
    pending | retrying -> cancelled.

    ``failed``: this channel gave up and the message went on to the recipient's next channel;
    ``dead``: no channel left — HQ is alerted (see ``hub.deadletter``); ``cancelled``: not sent
    because its recipient was deactivated or deleted (``detail`` says which and when).
    """

    PENDING = "pending"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: Rows the dispatcher may claim (``retrying`` only once ``next_try_at`` has come).
CLAIMABLE_STATUSES = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)
#: Rows whose message has no final outcome yet.
OPEN_STATUSES = (*CLAIMABLE_STATUSES, DeliveryStatus.SENDING.value)


class Defender(SQLModel, table=True):
    """A person who wears a wristband."""

    id: int | None = Field(default=None, primary_key=True)
    name: str
    language: str = "en"
    timezone: str = "UTC"
    created_at: datetime = Field(default_factory=utc_now)
    allow_public_broadcast: bool = Field(
        default=False, description="The defender's own consent to press and public channels."
    )
    policy_id: int | None = Field(default=None, foreign_key="escalationpolicy.id")
    cancel_code_hash: str | None = None
    duress_code_hash: str | None = None


class Device(SQLModel, table=True):
    """A wristband. ``id`` is its MQTT username, client id and topic segment."""

    id: str = Field(primary_key=True, max_length=64)
    defender_id: int = Field(foreign_key="defender.id", index=True)
    active: bool = True
    registered_at: datetime = Field(default_factory=utc_now)
    last_seen_at: datetime | None = None
    online: bool | None = None
    battery: int | None = None
    last_seq: int | None = Field(default=None, sa_type=BigInteger)
    key: str | None = Field(
        default=None,
        sa_column=Column(SealedText("device.key")),
        description="Signing key, 64 hex characters; a secret, never logged.",
    )
    encrypt: bool = Field(default=False, description="Refuse payloads that are not encrypted.")
    alarm_seq: int | None = Field(
        default=None,
        sa_type=BigInteger,
        description="Highest seq accepted on alarm and cancel (anti-replay window).",
    )
    alarm_seen: bytes | None = Field(
        default=None,
        sa_type=LargeBinary,
        description="Which of the REPLAY_WINDOW seqs below alarm_seq were accepted (a bitmap).",
    )
    telemetry_seq: int | None = Field(
        default=None,
        sa_type=BigInteger,
        description="Highest seq accepted on location and heartbeat (anti-replay window).",
    )
    telemetry_seen: bytes | None = Field(
        default=None,
        sa_type=LargeBinary,
        description="Which of the REPLAY_WINDOW seqs below telemetry_seq were accepted.",
    )
    heartbeat_interval_s: int | None = None
    training_event_id: int | None = Field(
        default=None,
        description="Set for a Defenders' Days training wristband: whatever it sends is a "
        "training alarm for that event's participant, never for the defender's contacts.",
    )
    silent_since: datetime | None = Field(default=None, description="Set while it is silent.")
    battery_low: bool = False


class Contact(SQLModel, table=True):
    """Someone to notify: a defender's contact, or organisation-wide when ``defender_id`` is None
    (HQ, partners, embassies, press, public channels)."""

    id: int | None = Field(default=None, primary_key=True)
    defender_id: int | None = Field(default=None, foreign_key="defender.id", index=True)
    role: str = Role.TRUSTED.value
    name: str
    channel_url: str = Field(description="Notifier URL; holds credentials, never logged.")
    fallback_urls: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="Tried in order when the channel before fails.",
    )
    language: str = "en"
    receives_tests: bool = False
    active: bool = True


class Responder(SQLModel, table=True):
    """A volunteer or partner staff member who can come when they are near an alarm."""

    id: int | None = Field(default=None, primary_key=True)
    name: str
    channel_url: str
    fallback_urls: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    language: str = "en"
    available: bool = True
    radius_m: float = 5000.0
    receives_tests: bool = False
    mqtt_user: str | None = Field(
        default=None, unique=True, description="OwnTracks username (topic owntracks/{user}/...)."
    )
    lat: float | None = _sealed_float("responder.lat")
    lon: float | None = _sealed_float("responder.lon")
    accuracy_m: float | None = _sealed_float("responder.accuracy_m")
    position_at: datetime | None = None


class EscalationPolicy(SQLModel, table=True):
    """Stages of recipients, delays and conditions; see ``hub.escalation.PolicyDocument``.

    The policy named ``default`` applies to every defender without one of their own.
    """

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    document: dict[str, object] = Field(sa_column=Column(JSON, nullable=False))


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
    seq: int = Field(sa_type=BigInteger, description="The device's seq: 0 ... 2**53-1.")
    lat: float | None = _sealed_float("alarm.lat")
    lon: float | None = _sealed_float("alarm.lon")
    accuracy_m: float | None = _sealed_float("alarm.accuracy_m")
    fix_ts: datetime | None = None
    battery: int | None = None
    received_at: datetime = Field(default_factory=utc_now, index=True)
    copies_received: int = 1
    clock_skew_s: float | None = Field(
        default=None,
        description="Device clock minus hub clock at receipt, set only when beyond the tolerance "
        "(the alarm is late, or the device clock is wrong).",
    )
    cancel_seq: int | None = Field(
        default=None, sa_type=BigInteger, description="Highest seq of a cancel applied to it."
    )
    duress: bool = Field(default=False, description="A duress code was entered: escalate silently.")
    duress_at: datetime | None = Field(
        default=None,
        description="When the duress code came: outside HQ the alarm looks cancelled from then "
        "on (hub.disclosure).",
    )
    outside_position_erased: bool = Field(
        default=False,
        description="A duress alarm whose position outsiders no longer see: retention erased it "
        "for them when it would have erased a really cancelled alarm's (HQ keeps it until the "
        "alarm really closes).",
    )
    acknowledged_at: datetime | None = None
    verified_at: datetime | None = None
    closed_at: datetime | None = None


class AlarmEvent(SQLModel, table=True):
    """The alarm's timeline: who or what did what, when."""

    id: int | None = Field(default=None, primary_key=True)
    alarm_pk: int = Field(foreign_key="alarm.id", index=True)
    at: datetime = Field(default_factory=utc_now)
    kind: str
    actor: str = "hub"
    detail: str = ""
    role: str | None = Field(
        default=None, description="The recipient role a delivery event is about (trusted, hq...)."
    )
    hq_only: bool = Field(
        default=False, description="Would reveal a duress code: shown to HQ only (hub.disclosure)."
    )


class Delivery(SQLModel, table=True):
    """One message to one recipient on one channel: the outbox row and its result.

    ``key`` makes creation idempotent (e.g. the first alarm message to contact 3 of alarm 12).
    """

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=200)
    alarm_pk: int | None = Field(default=None, foreign_key="alarm.id", index=True)
    rejected_pk: int | None = Field(default=None, foreign_key="rejectedmessage.id", index=True)
    device_event_pk: int | None = Field(default=None, foreign_key="deviceevent.id")
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    responder_id: int | None = Field(default=None, foreign_key="responder.id")
    registration_id: int | None = Field(
        default=None,
        foreign_key="conference_registration.id",
        description="A Defenders' Days registration: an announcement, or a training alarm's "
        "message to its participant.",
    )
    role: str = Role.TRUSTED.value
    kind: str = "alarm"
    stage: int | None = None
    channel_index: int = Field(default=0, description="0: primary channel; n: n-th fallback.")
    ack_token_hash: str | None = Field(default=None, unique=True)
    acknowledged_at: datetime | None = None
    recipient: str
    channel_url: str
    channel_masked: str
    language: str = "en"
    title: str
    body: str = Field(sa_column=Column(SealedText("delivery.body", ("", ERASED)), nullable=False))
    short: str = Field(sa_column=Column(SealedText("delivery.short", ("", ERASED)), nullable=False))
    status: str = Field(default=DeliveryStatus.PENDING.value, index=True)
    attempts: int = Field(default=0, description="Sends tried on this channel (claims).")
    interrupted: int = Field(
        default=0,
        description="Of those, sends cut off by a hub stop: not failures of the channel, so "
        "they do not count against [delivery] max_attempts (hub/retry.py).",
    )
    detail: str = Field(default="", description="The last attempt's result.")
    created_at: datetime = Field(default_factory=utc_now)
    finished_at: datetime | None = Field(default=None, description="End of the last attempt.")
    next_try_at: datetime | None = Field(
        default=None, index=True, description="A retry is not claimed before this."
    )
    deadline_at: datetime | None = Field(
        default=None,
        description="Set at the first claim; the message's channels give up after it "
        "(each channel still gets one attempt).",
    )
    claimed_at: datetime | None = Field(
        default=None, description="When a dispatcher took it; a lease, see requeue_interrupted."
    )
    claimed_by: str | None = Field(default=None, max_length=100, description="Hub instance id.")
    hq_only: bool = Field(
        default=False,
        description="About a duress alarm after its code (an HQ alert, a stage run early): it "
        "would reveal the code, so it is shown to HQ only (hub.disclosure).",
    )


class Timer(SQLModel, table=True):
    """Something the hub must do at ``due_at``: a row, so it survives a restart."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str  #: "stage", "reminder"
    due_at: datetime = Field(index=True)
    alarm_pk: int | None = Field(default=None, foreign_key="alarm.id", index=True)
    payload: dict[str, object] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    done_at: datetime | None = Field(default=None, index=True)
    outcome: str = ""


class HubSecret(SQLModel, table=True):
    """A secret of the whole deployment, not of one hub: made once by the first hub that needs
    it, so that every hub on the same database uses the same (``hub.outside_ids``)."""

    name: str = Field(primary_key=True, max_length=64)
    value: bytes = Field(
        sa_column=Column(SealedBytes("hubsecret.value", ()), nullable=False), repr=False
    )
    created_at: datetime = Field(default_factory=utc_now)


class DeviceAck(SQLModel, table=True):
    """An ack the hub owes a device (outbox): published by the hub, whoever caused it."""

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="device.id")
    alarm_id: str
    stage: str
    created_at: datetime = Field(default_factory=utc_now)
    sent_at: datetime | None = Field(default=None, index=True)


class DeviceEvent(SQLModel, table=True):
    """Supervision of a wristband: silent, back, offline (last will), low battery."""

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(foreign_key="device.id", index=True)
    at: datetime = Field(default_factory=utc_now)
    kind: str
    detail: str = ""


class RejectedMessage(SQLModel, table=True):
    """A message the hub could not accept, kept whole with the reason, for HQ to review."""

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(default_factory=utc_now, index=True)
    topic: str
    device_id: str | None = Field(default=None, description="As claimed by the topic.")
    channel: str | None = None
    reason: str
    payload: bytes = Field(sa_column=Column(SealedBytes("rejectedmessage.payload"), nullable=False))
    payload_size: int
    suspicious: bool = Field(
        default=False,
        description="Not provably from its device, or not new: a bad signature, a replayed seq.",
    )
    reviewed_at: datetime | None = None
