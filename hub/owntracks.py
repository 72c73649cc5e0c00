"""Responders' positions in the OwnTracks app's own MQTT JSON format, so no app of ours is needed.

In MQTT mode the OwnTracks app (iOS, Android) publishes ``{"_type": "location", ...}`` to
``owntracks/{user}/{device}``, where ``user`` is its broker username and ``device`` its
configured device id (https://owntracks.org/booklet/tech/json/). The broker's ACL lets a
responder's account write only ``owntracks/{its username}/+``, so the topic is the identity;
a ``topic`` element in the payload (HTTP mode only) is ignored.

Only ``lat``, ``lon``, ``tst`` and ``acc`` are used. The other elements the app sends are
modelled so that a reader knows what arrives; an invalid optional element becomes ``None``
instead of losing the position, and unknown elements are ignored because the apps add
elements over versions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from devicekit.topics import validate_device_id

TOPIC_PREFIX = "owntracks"

#: What the hub subscribes to: every user's and device's location (and last will).
SUBSCRIPTION = f"{TOPIC_PREFIX}/+/+"

#: A location message is a few hundred bytes; anything this big is not one.
MAX_PAYLOAD_BYTES = 16 * 1024

#: Every ``_type`` the apps publish besides ``location`` (booklet, "JSON", table "Types").
#: On ``owntracks/{user}/{device}`` itself only ``lwt`` (the broker's last will for the app)
#: arrives; the others go to sub-topics the ACL refuses. ``encrypted`` hides a location we
#: cannot read: tell responders to leave the app's encryption off (see broker/README.md).
OTHER_TYPES = frozenset(
    {
        "beacon",
        "card",
        "cmd",
        "configuration",
        "encrypted",
        "lwt",
        "request",
        "status",
        "steps",
        "transition",
        "waypoint",
        "waypoints",
    }
)

#: 9999-12-31T23:59:59Z: later ``tst`` values cannot be a ``datetime``.
_MAX_EPOCH = 253_402_300_799

Latitude = Annotated[float, Field(strict=True, ge=-90, le=90, repr=False)]
Longitude = Annotated[float, Field(strict=True, ge=-180, le=180, repr=False)]


class OwnTracksTopic(NamedTuple):
    user: str
    device: str


def parse_topic(topic: str) -> OwnTracksTopic:
    """Split ``owntracks/{user}/{device}``; raise ``ValueError`` if it is not such a topic."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != TOPIC_PREFIX:
        raise ValueError(f"not an OwnTracks location topic (owntracks/USER/DEVICE): {topic!r}")
    user, device = parts[1], parts[2]
    try:
        validate_device_id(user)
    except ValueError:
        raise ValueError(
            f"invalid OwnTracks user {user!r} in topic: the user is the broker username, "
            "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ) from None
    try:
        validate_device_id(device)
    except ValueError:
        raise ValueError(
            f"invalid OwnTracks device id {device!r} in topic: set the app's Device ID to "
            "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ) from None
    return OwnTracksTopic(user, device)


class OwnTracksLocation(BaseModel):
    """One ``_type: "location"`` message, with ``user`` and ``device`` taken from its topic.

    Coordinates and network names are left out of ``repr()``, so logging the object by
    mistake does not write a position into a log.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)

    user: str = Field(description="From the topic: the broker username of the responder.")
    device: str = Field(description="From the topic: the app's device id.")
    message_type: Literal["location"] = Field(default="location", alias="_type")

    lat: Latitude = Field(description="Latitude, degrees (WGS 84).")
    lon: Longitude = Field(description="Longitude, degrees (WGS 84).")
    tst: int = Field(strict=True, gt=0, le=_MAX_EPOCH, description="UNIX time of the fix, seconds.")
    acc: float | None = Field(
        default=None,
        strict=True,
        ge=0,
        description="Horizontal accuracy, metres; omitted by the app when zero.",
    )

    alt: float | None = Field(default=None, repr=False, description="Altitude, metres.")
    vac: float | None = Field(default=None, description="Vertical accuracy of alt, metres.")
    vel: float | None = Field(default=None, description="Velocity, km/h.")
    cog: float | None = Field(default=None, description="Course over ground, degrees.")
    rad: float | None = Field(default=None, description="Radius of a region event, metres.")
    p: float | None = Field(default=None, description="Barometric pressure, kPa.")
    batt: int | None = Field(default=None, description="Battery level, percent.")
    bs: int | None = Field(
        default=None, description="Battery status: 0 unknown, 1 unplugged, 2 charging, 3 full."
    )
    m: int | None = Field(default=None, description="Monitoring mode of the app.")
    tid: str | None = Field(default=None, description="Tracker id: two letters shown on maps.")
    t: str | None = Field(
        default=None, description="Trigger: p ping, c region, b beacon, r requested, u user..."
    )
    conn: str | None = Field(default=None, description="Connectivity: w wifi, o offline, m mobile.")
    topic: str | None = Field(default=None, description="HTTP mode only; ignored.")
    created_at: int | None = Field(
        default=None, description="UNIX time the message was built (tst is the fix)."
    )
    SSID: str | None = Field(default=None, repr=False, description="Wi-Fi network name.")
    BSSID: str | None = Field(default=None, repr=False, description="Wi-Fi access point.")
    inregions: list[str] | None = Field(
        default=None, repr=False, description="Names of the app's regions the phone is in."
    )
    inrids: list[str] | None = Field(
        default=None, repr=False, description="Ids of the app's regions the phone is in."
    )

    @field_validator(
        "alt", "vac", "vel", "cog", "rad", "p", "batt", "bs", "m", "tid", "t", "conn",
        "topic", "created_at", "SSID", "BSSID", "inregions", "inrids",
        mode="wrap",
    )  # fmt: skip
    @classmethod
    def _unusable_extra_is_unknown(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """An odd optional element must not cost the position: keep ``None`` instead."""
        try:
            return handler(value)
        except ValidationError:
            return None

    @property
    def fix_time(self) -> datetime:
        """When the phone took the fix (``tst``), as an aware UTC time."""
        return datetime.fromtimestamp(self.tst, UTC)


def parse_owntracks(topic: str, payload: bytes) -> OwnTracksLocation | None:
    """The location in one message from ``owntracks/{user}/{device}``.

    Returns ``None`` for the app's other message types (:data:`OTHER_TYPES`: its last will,
    waypoints, ...). Raises ``ValueError`` with a readable reason, never containing
    coordinates, when the topic or the JSON is malformed, the ``_type`` is unknown, or the
    location is invalid (missing or non-integer ``tst``, ``lat``/``lon`` out of range,
    non-finite numbers, negative ``acc``, which iOS uses for an invalid fix).
    """
    where = parse_topic(topic)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"payload of {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}: "
            "not an OwnTracks location"
        )
    data = _load_json_object(payload)
    kind = data.get("_type")
    if not isinstance(kind, str):
        raise ValueError("no _type string in the JSON object: not an OwnTracks message")
    if kind in OTHER_TYPES:
        return None
    if kind != "location":
        raise ValueError(f"unknown OwnTracks _type {kind[:40]!r}")
    try:
        return OwnTracksLocation.model_validate(
            {**data, "user": where.user, "device": where.device}
        )
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_input=False))
        raise ValueError(f"invalid OwnTracks location: {problems}") from None


def _load_json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ValueError("payload is not UTF-8 text: not an OwnTracks message") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload is not JSON: {exc.msg} at character {exc.pos}") from None
    except ValueError as exc:  # NaN/Infinity, or an integer of thousands of digits
        raise ValueError(f"payload is not usable JSON: {exc}") from None
    except RecursionError:
        raise ValueError("payload JSON is nested too deeply: not an OwnTracks message") from None
    if not isinstance(data, dict):
        raise ValueError(f"payload is a JSON {type(data).__name__}, not an OwnTracks object")
    return data


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number in JSON")


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "message"
    if error["type"] == "missing":
        return f"{field} is missing"
    return f"{field}: {error['msg']}"
