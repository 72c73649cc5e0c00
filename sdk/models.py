"""The hub API's wire models: the hub serves exactly these, and the SDK parses them.

One definition for both sides keeps the OpenAPI document, the server and the SDK in step.
Models the API returns ignore unknown fields, so an older SDK keeps working against a newer hub;
models the API accepts forbid them, so a typo is a clear 422 instead of a silently dropped field.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

T = TypeVar("T")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Money = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]
#: Row ids: positive and within a 32-bit INTEGER column (SQLite and PostgreSQL alike).
MAX_ID = 2_147_483_647
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class Model(BaseModel):
    """What the API returns."""

    model_config = ConfigDict(from_attributes=True, extra="ignore")


class Input(BaseModel):
    """What the API accepts. Text may not hold NUL characters (no database stores them)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _holds_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


def _holds_nul(value: object) -> bool:
    # A loop, not recursion: a hostile body nested 900 levels deep must not raise RecursionError.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


class Page(Model, Generic[T]):
    """One page of a list, newest or lowest id first as each endpoint documents.

    Pass ``next_cursor`` as ``cursor`` to get the next page; ``None`` means this was the last.
    """

    items: list[T]
    next_cursor: str | None = None


# -- tokens and roles ------------------------------------------------------------------------


class ApiRole(enum.StrEnum):
    ADMIN = "admin"  #: everything, including tokens and webhooks
    HQ = "hq"  #: HQ operators: registrations, alarm actions, fund reviews
    INTEGRATION = "integration"  #: partner systems: the fund's and Defenders' Days' integrations
    READ_ONLY = "read_only"  #: dashboards and audits: reads, no changes


class TokenIn(Input):
    name: Name
    role: ApiRole
    expires_at: datetime | None = None


class Token(Model):
    id: int
    name: str
    role: ApiRole
    prefix: str = Field(description="The token's first characters, to recognise it.")
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenCreated(Token):
    token: str = Field(description="The secret itself: shown once, stored only as a hash.")


class Me(Model):
    token_id: int
    name: str
    role: ApiRole
    permissions: list[str]


# -- defenders, devices, contacts, responders, policies ---------------------------------------


class DefenderIn(Input):
    name: Name
    language: Language = "en"
    timezone: str = "UTC"
    allow_public_broadcast: bool = False
    policy: str | None = Field(default=None, description="Escalation policy name.")


class DefenderUpdate(Input):
    name: Name | None = None
    language: Language | None = None
    timezone: str | None = None
    allow_public_broadcast: bool | None = None
    policy: str | None = None


class DefenderCodes(Input):
    """The defender's cancel and duress codes (4 to 32 characters, different from each other)."""

    cancel_code: Annotated[str, StringConstraints(min_length=4, max_length=32)]
    duress_code: Annotated[str, StringConstraints(min_length=4, max_length=32)]


class Defender(Model):
    id: int
    name: str
    language: str
    timezone: str
    allow_public_broadcast: bool
    policy: str | None = None
    codes_set: bool = False
    created_at: datetime


class DeviceIn(Input):
    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    defender_id: Id
    encrypt: bool = Field(
        default=False, description="Refuse its payloads unless encrypted with its key."
    )


class Device(Model):
    id: str
    defender_id: int
    active: bool
    registered_at: datetime
    last_seen_at: datetime | None = None
    online: bool | None = None
    battery: int | None = None
    battery_low: bool = False
    silent_since: datetime | None = None
    encrypt: bool = False


class DeviceCredentials(Model):
    """Returned once, when a device is registered: its broker password and signing key."""

    device_id: str
    password: str
    key: str = Field(
        default="", description="The device's signing key, 64 hex characters (PROTOCOL.md §5.5)."
    )
    broker_reloaded: bool


class DeviceResumed(Model):
    """Returned once, when a suspended device is resumed: its new broker password."""

    device_id: str
    password: str = Field(description="The new broker password; the signing key is unchanged.")
    certificate_released: bool = Field(
        description="Its client certificate was on hold in the CRL and is valid again."
    )
    broker_reloaded: bool


class RecipientRole(enum.StrEnum):
    HQ = "hq"
    TRUSTED = "trusted"
    PARTNER = "partner"
    EMBASSY = "embassy"
    PRESS = "press"
    PUBLIC = "public"


class ContactIn(Input):
    name: Name
    channel_url: str = Field(description="Notifier URL, e.g. mailto://... or tgram://...")
    defender_id: Id | None = Field(
        default=None, description="None: organisation-wide (HQ, partners, press...)."
    )
    role: RecipientRole | None = Field(
        default=None, description="Default: trusted for a defender's contact, hq otherwise."
    )
    language: Language = "en"
    fallback_urls: list[str] = Field(default_factory=list, max_length=10)
    receives_tests: bool | None = None


class ContactUpdate(Input):
    name: Name | None = None
    language: Language | None = None
    receives_tests: bool | None = None
    active: bool | None = None


class Contact(Model):
    """Channel URLs hold credentials: the API only ever shows them masked."""

    id: int
    name: str
    defender_id: int | None = None
    role: str
    language: str
    channel: str
    fallbacks: list[str] = Field(default_factory=list)
    receives_tests: bool
    active: bool


class ResponderIn(Input):
    name: Name
    channel_url: str
    language: Language = "en"
    radius_m: float = Field(default=5000.0, gt=0, le=200_000)
    fallback_urls: list[str] = Field(default_factory=list, max_length=10)
    receives_tests: bool = False
    mqtt_user: str | None = Field(
        default=None, description="OwnTracks username; creates the responder's broker account."
    )


class ResponderUpdate(Input):
    name: Name | None = None
    language: Language | None = None
    radius_m: float | None = Field(default=None, gt=0, le=200_000)
    available: bool | None = None
    receives_tests: bool | None = None


class Responder(Model):
    id: int
    name: str
    language: str
    channel: str
    fallbacks: list[str] = Field(default_factory=list)
    available: bool
    radius_m: float
    receives_tests: bool
    mqtt_user: str | None = None
    position_at: datetime | None = Field(
        default=None, description="When the last position arrived (positions are not shown)."
    )


class ResponderCreated(Responder):
    mqtt_password: str | None = Field(default=None, description="Shown once.")


class Policy(Model):
    name: str
    document: dict[str, Any] = Field(description="Stages, delays, conditions: see POLICIES.")


class PolicyIn(Input):
    document: dict[str, Any]


# -- alarms --------------------------------------------------------------------------------


class AlarmState(enum.StrEnum):
    RECEIVED = "received"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    VERIFIED = "verified"
    RESOLVED = "resolved"
    FALSE_ALARM = "false_alarm"
    CANCELLED = "cancelled"


class Position(Model):
    lat: float
    lon: float
    accuracy_m: float | None = None
    fix_ts: datetime | None = None


class Alarm(Model):
    id: int
    ref: str = Field(description='What HQ calls it: "A12".')
    device_id: str
    defender_id: int
    device_alarm_id: str
    kind: str
    state: AlarmState
    duress: bool = Field(
        description="A duress code was entered (the alarm only looks cancelled). Told to HQ's "
        "roles only: for everyone else it is false and the alarm reads as really cancelled."
    )
    device_ts: datetime
    received_at: datetime
    position: Position | None = None
    battery: int | None = None
    copies_received: int
    clock_skew_s: float | None = Field(
        default=None,
        description="Device clock minus hub clock when beyond the tolerance: the alarm is late, "
        "or the wristband's clock is wrong.",
    )
    acknowledged_at: datetime | None = None
    verified_at: datetime | None = None
    closed_at: datetime | None = None


class AlarmEvent(Model):
    """One entry of an alarm's timeline; also what the live stream sends."""

    id: int
    alarm_id: int
    alarm_ref: str
    at: datetime
    kind: str
    actor: str
    detail: str = ""


class AlarmAction(Input):
    note: Annotated[str, StringConstraints(max_length=2000)] = ""


class EscalationResult(Model):
    alarm: Alarm
    queued: int = Field(description="Messages queued by this escalation.")


class Delivery(Model):
    """One message to one recipient on one channel (bodies hold positions: not shown)."""

    id: int
    alarm_id: int | None = None
    kind: str
    role: str
    recipient: str
    channel: str
    channel_index: int
    stage: int | None = None
    status: str
    attempts: int
    detail: str = ""
    created_at: datetime
    finished_at: datetime | None = None
    next_try_at: datetime | None = None
    acknowledged_at: datetime | None = None


class RejectedMessage(Model):
    """A message the hub could not accept, kept with the reason for HQ (payload not shown)."""

    id: int
    received_at: datetime
    topic: str
    device_id: str | None = None
    channel: str | None = None
    reason: str
    payload_size: int
    suspicious: bool = Field(
        default=False,
        description="It failed the signature or replay checks: possibly forged or replayed.",
    )
    reviewed_at: datetime | None = None


# -- webhooks --------------------------------------------------------------------------------


class WebhookIn(Input):
    url: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=2000)]
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        description='Event types or patterns: "alarm.*", "fund_request.approved", "*".',
    )
    description: Annotated[str, StringConstraints(max_length=500)] = ""


class Webhook(Model):
    id: int
    url: str
    events: list[str]
    description: str = ""
    active: bool
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(description="Signs every delivery (HMAC-SHA256); shown once.")


class WebhookDelivery(Model):
    id: int
    webhook_id: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    response_status: int | None = None
    detail: str = ""
    created_at: datetime
    next_try_at: datetime | None = None
    delivered_at: datetime | None = None


class WebhookEvent(Model):
    """The body of every webhook POST."""

    id: str = Field(description='Unique and stable across retries, e.g. "alarm_event.42".')
    type: str = Field(description='e.g. "alarm.acknowledged", "fund_request.approved".')
    created_at: datetime
    data: dict[str, Any]


# -- emergency fund --------------------------------------------------------------------------


class FundPurpose(enum.StrEnum):
    TEMPORARY_RELOCATION = "temporary_relocation"
    INFORMATION_PROTECTION = "information_protection"  #: protecting information and documents
    SECURITY_SOLUTIONS = "security_solutions"


class FundState(enum.StrEnum):
    SUBMITTED = "submitted"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    DISBURSED = "disbursed"


class FundRequestIn(Input):
    defender_id: Id
    alarm_id: Id | None = Field(default=None, description="The alarm this request follows.")
    purpose: FundPurpose
    amount: Money
    currency: Currency
    startup_grant: Money | None = Field(
        default=None, description="A start-up grant in the same currency, on top of amount."
    )
    description: Text = ""


class FundRequestUpdate(Input):
    """Changes while the request is still submitted."""

    purpose: FundPurpose | None = None
    amount: Money | None = None
    currency: Currency | None = None
    startup_grant: Money | None = None
    description: Text | None = None


class FundTransition(Input):
    state: FundState
    note: Text = ""


class FundRequest(Model):
    id: int
    defender_id: int
    alarm_id: int | None = None
    purpose: FundPurpose
    amount: Decimal
    currency: str
    startup_grant: Decimal | None = None
    description: str = ""
    state: FundState
    created_at: datetime
    updated_at: datetime
    created_by: str
    reference_problem: str | None = Field(
        default=None,
        description="Why defender_id or alarm_id does not hold, when it does not (shown to "
        "roles with operations rights only); such a request can only be rejected.",
    )


class FundRequestEvent(Model):
    """The audit trail: every change, by whom, when."""

    id: int
    request_id: int
    at: datetime
    actor: str
    action: str = Field(description='"created", "updated" or "state".')
    from_state: FundState | None = None
    to_state: FundState | None = None
    note: str = ""


# -- Defenders' Days -----------------------------------------------------------------------


class EventIn(Input):
    name: Name
    starts_on: date
    ends_on: date
    location: Annotated[str, StringConstraints(max_length=200)] = ""
    description: Text = ""


class Event(Model):
    id: int
    name: str
    starts_on: date
    ends_on: date
    location: str = ""
    description: str = ""
    training_active: bool = False
    created_at: datetime


class SessionKind(enum.StrEnum):
    SESSION = "session"
    TRAINING = "training"


class SessionIn(Input):
    title: Name
    kind: SessionKind = SessionKind.SESSION
    starts_at: datetime
    ends_at: datetime
    room: Annotated[str, StringConstraints(max_length=200)] = ""
    description: Text = ""


class EventSession(Model):
    id: int
    event_id: int
    title: str
    kind: SessionKind
    starts_at: datetime
    ends_at: datetime
    room: str = ""
    description: str = ""


class ParticipantKind(enum.StrEnum):
    DEFENDER = "defender"
    GUEST = "guest"


class Needs(Model):
    visa_letter: bool = False
    travel_support: bool = False
    security_considerations: Annotated[str, StringConstraints(max_length=5000)] = ""


class NeedsIn(Input):
    visa_letter: bool = False
    travel_support: bool = False
    security_considerations: Annotated[str, StringConstraints(max_length=5000)] = ""


class RegistrationIn(Input):
    kind: ParticipantKind
    defender_id: Id | None = Field(default=None, description="Required for a defender.")
    name: Name | None = Field(default=None, description="Required for a guest.")
    channel_url: str | None = Field(default=None, description="Where announcements go.")
    language: Language = "en"
    needs: NeedsIn = Field(default_factory=NeedsIn)


class Registration(Model):
    id: int
    event_id: int
    kind: ParticipantKind
    defender_id: int | None = None
    name: str
    channel: str | None = None
    language: str
    needs: Needs
    status: str = Field(description='"registered" or "cancelled".')
    training_device_id: str | None = None
    created_at: datetime


class AnnouncementIn(Input):
    title: Name
    body: Text
    short: Annotated[str, StringConstraints(max_length=480)] | None = Field(
        default=None, description="The SMS text; default: the title."
    )


class Announcement(Model):
    id: int
    event_id: int
    title: str
    body: str
    short: str
    created_at: datetime
    created_by: str
    recipients: int = Field(description="Messages queued, one per registration with a channel.")


class TrainingKit(Model):
    """A training wristband handed to one participant."""

    registration_id: int
    device_id: str
    password: str | None = Field(
        default=None, description="The broker password: only in the response that hands it out."
    )
    key: str | None = Field(
        default=None, description="The signing key: only in the response that hands it out."
    )


class TrainingAlarmIn(Input):
    registration_id: Id


class Training(Model):
    event_id: int
    active: bool
    kits: list[TrainingKit] = Field(default_factory=list)
