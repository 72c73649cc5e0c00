"""Protocol v1: the messages a wristband and the hub exchange over MQTT.

These models are the normative schema; ``PROTOCOL.md`` beside this file explains them for device
makers and ``devicekit.schema`` exports them as JSON Schema. Every message is one UTF-8 JSON
object with ``v`` (protocol version) and ``type`` (the message kind, equal to the topic's channel).
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

PROTOCOL_VERSION = 1
#: Largest payload a device may send. The hub keeps but refuses anything bigger.
MAX_PAYLOAD_BYTES = 16 * 1024

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ID_RE = re.compile(_ID_PATTERN)

AlarmId = Annotated[
    str,
    Field(
        pattern=_ID_PATTERN, description="Device-unique alarm id; the idempotency key for re-sends."
    ),
]
CommandId = Annotated[
    str, Field(pattern=_ID_PATTERN, description="Hub-chosen id of a command, echoed in replies.")
]
Sequence = Annotated[
    int, Field(ge=0, le=2**53 - 1, description="Per-device counter, +1 for every message sent.")
]


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC, as every protocol timestamp must be."""
    return datetime.now(UTC)


class AlarmKind(enum.StrEnum):
    """Why the alarm was raised."""

    PANIC = "panic"  #: the wristband was pulled
    REMOVAL = "removal"  #: the wristband was taken off the wrist
    DURESS = "duress"  #: raised silently (e.g. a duress code)
    FALL = "fall"  #: a fall was detected
    TEST = "test"  #: exercise of the alarm path; reaches only recipients marked for tests


class AckStage(enum.StrEnum):
    """How far the hub has got with an alarm; each stage is sent to the device on ``ack``."""

    RECEIVED = "received"  #: stored by the hub; the device may stop re-sending
    NOTIFIED = "notified"  #: every first-stage recipient has been sent the alarm
    RESPONDER_COMING = "responder_coming"  #: a contact or responder said they are on their way
    RESOLVED = "resolved"  #: HQ closed the alarm
    CANCELLED = "cancelled"  #: the defender's cancel was accepted


def in_utc_range(value: datetime) -> datetime:
    """``value`` if it is still a time once converted to UTC (0001-01-01T00:00+05:00 is not)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None
    return value


class _Message(BaseModel):
    # strict: "1" is not a number and 1700000000 is not a timestamp; JSON strings still parse
    # as RFC 3339 times and enum values.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: Literal[1] = Field(default=1, description="Protocol version.")

    @field_validator("v", mode="before")
    @classmethod
    def _version_is_an_integer(cls, value: Any) -> Any:
        # Literal[1] alone accepts true and 1.0: both equal 1 in Python.
        if type(value) is not int:
            raise ValueError("the protocol version must be the integer 1")
        return value

    @field_validator("ts", check_fields=False)
    @classmethod
    def _ts_in_utc_range(cls, value: datetime) -> datetime:
        return in_utc_range(value)

    def to_payload(self) -> bytes:
        """Serialise to the UTF-8 JSON bytes that go on the wire."""
        return self.model_dump_json(exclude_none=True).encode()


class Position(BaseModel):
    """One GNSS fix. Absent (``null``) in a message when the device has no fix."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    lat: float = Field(ge=-90, le=90, description="Latitude, WGS 84 degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude, WGS 84 degrees.")
    accuracy_m: float = Field(
        ge=0, le=1_000_000, description="Horizontal accuracy radius in metres."
    )
    fix_ts: AwareDatetime = Field(description="When the fix was taken (RFC 3339 with offset).")

    @field_validator("fix_ts")
    @classmethod
    def _fix_ts_in_utc_range(cls, value: datetime) -> datetime:
        return in_utc_range(value)

    @field_validator("lat", "lon", "accuracy_m")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return value


class Alarm(_Message):
    """Device -> hub on ``alarm``: the defender needs help."""

    type: Literal["alarm"] = "alarm"
    alarm_id: AlarmId
    kind: AlarmKind
    ts: AwareDatetime = Field(description="Device time when the alarm was raised.")
    seq: Sequence
    position: Position | None = Field(default=None, description="Last fix; null when none.")
    battery: int | None = Field(default=None, ge=0, le=100, description="Battery percent.")


class Cancel(_Message):
    """Device -> hub on ``cancel``: the defender cancels an alarm with their code."""

    type: Literal["cancel"] = "cancel"
    alarm_id: AlarmId
    ts: AwareDatetime
    seq: Sequence
    code: str = Field(min_length=1, max_length=32, description="The defender's cancel code.")


class Location(_Message):
    """Device -> hub on ``location``: a position update while an alarm is active."""

    type: Literal["location"] = "location"
    alarm_id: AlarmId | None = None
    ts: AwareDatetime
    seq: Sequence
    position: Position


class Heartbeat(_Message):
    """Device -> hub on ``heartbeat``: the wristband is alive and when to expect the next one."""

    type: Literal["heartbeat"] = "heartbeat"
    ts: AwareDatetime
    seq: Sequence
    battery: int | None = Field(default=None, ge=0, le=100)
    interval_s: int = Field(ge=10, le=86_400, description="Seconds until the next heartbeat.")


class Status(_Message):
    """Device -> hub on ``status`` (retained): ``online`` at connect; last will ``offline``.

    The will is signed when the device connects, so its ``ts`` and ``seq`` are from then.
    """

    type: Literal["status"] = "status"
    state: Literal["online", "offline"]
    ts: AwareDatetime
    seq: Sequence


class HubAck(_Message):
    """Hub -> device on ``ack``: progress of one alarm."""

    type: Literal["ack"] = "ack"
    alarm_id: AlarmId
    stage: AckStage
    ts: AwareDatetime


class Command(_Message):
    """Hub -> device on ``cmd``: a request to the wristband (e.g. report position now)."""

    type: Literal["cmd"] = "cmd"
    cmd_id: CommandId
    name: Literal["locate", "ping"]
    args: dict[str, Any] = Field(default_factory=dict)


DeviceMessage = Annotated[
    Alarm | Cancel | Location | Heartbeat | Status, Field(discriminator="type")
]
HubMessage = Annotated[HubAck | Command, Field(discriminator="type")]

#: Channel name -> model, for both directions.
CHANNEL_MODELS: dict[str, type[_Message]] = {
    "alarm": Alarm,
    "cancel": Cancel,
    "location": Location,
    "heartbeat": Heartbeat,
    "status": Status,
    "ack": HubAck,
    "cmd": Command,
}
DEVICE_CHANNELS = ("alarm", "cancel", "location", "heartbeat", "status")
HUB_CHANNELS = ("ack", "cmd")

_device_message: TypeAdapter[Alarm | Cancel | Location | Heartbeat | Status] = TypeAdapter(
    DeviceMessage
)


def parse_device_message(
    channel: str, payload: bytes
) -> Alarm | Cancel | Location | Heartbeat | Status:
    """Parse a device payload received on ``channel``.

    Raises ``ValueError`` (pydantic's ``ValidationError`` is one) with a readable reason when the
    payload is not UTF-8 JSON, does not match the schema, or its ``type`` is not the channel.
    """
    if channel not in DEVICE_CHANNELS:
        raise ValueError(f"unknown device channel {channel!r}; expected one of {DEVICE_CHANNELS}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"payload of {len(payload)} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}"
        )
    message = _device_message.validate_json(payload)
    if "v" not in message.model_fields_set:
        raise ValueError("the protocol version field 'v' is missing; protocol v1 needs \"v\": 1")
    if message.type != channel:
        raise ValueError(f"message type {message.type!r} was published on channel {channel!r}")
    return message
