"""Protocol v1 as a device maker meets it: models, wire payloads, JSON Schemas and topics."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from devicekit.protocol import (
    MAX_PAYLOAD_BYTES,
    AckStage,
    Alarm,
    AlarmKind,
    Cancel,
    Command,
    DeviceMessage,
    Heartbeat,
    HubAck,
    Location,
    Position,
    Status,
    parse_device_message,
    utcnow,
)
from devicekit.schema import SCHEMA_DIR, json_schemas, write_schemas
from devicekit.topics import parse_topic, subscription, topic, validate_device_id

TS = "2025-03-01T12:00:00Z"
FIX = {"lat": 52.5163, "lon": 13.3777, "accuracy_m": 12.5, "fix_ts": "2025-03-01T11:59:58Z"}

VALID_DEVICE_MESSAGES: dict[str, dict[str, Any]] = {
    "alarm": {
        "v": 1,
        "type": "alarm",
        "alarm_id": "01JNB3T0J5M4X2Q8Z7K9W6R1AB",
        "kind": "panic",
        "ts": TS,
        "seq": 42,
        "position": FIX,
        "battery": 81,
    },
    "cancel": {
        "v": 1,
        "type": "cancel",
        "alarm_id": "01JNB3T0J5M4X2Q8Z7K9W6R1AB",
        "ts": TS,
        "seq": 43,
        "code": "4711",
    },
    "location": {
        "v": 1,
        "type": "location",
        "alarm_id": "01JNB3T0J5M4X2Q8Z7K9W6R1AB",
        "ts": TS,
        "seq": 44,
        "position": FIX,
    },
    "heartbeat": {
        "v": 1,
        "type": "heartbeat",
        "ts": TS,
        "seq": 45,
        "battery": 80,
        "interval_s": 300,
    },
    "status": {
        "v": 1,
        "type": "status",
        "state": "offline",
        "ts": "2025-03-01T12:00:00Z",
        "seq": 9,
    },
}


def payload(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def alarm_with(**changes: Any) -> dict[str, Any]:
    message = dict(VALID_DEVICE_MESSAGES["alarm"])
    message.update(changes)
    return {key: value for key, value in message.items() if value is not ...}


# -- valid messages ---------------------------------------------------------------------------


@pytest.mark.parametrize("channel", sorted(VALID_DEVICE_MESSAGES))
def test_every_valid_device_message_parses_on_its_channel(channel: str) -> None:
    message = parse_device_message(channel, payload(VALID_DEVICE_MESSAGES[channel]))
    assert message.type == channel


@pytest.mark.parametrize("channel", sorted(VALID_DEVICE_MESSAGES))
def test_wire_payload_round_trips(channel: str) -> None:
    message = parse_device_message(channel, payload(VALID_DEVICE_MESSAGES[channel]))
    assert parse_device_message(channel, message.to_payload()) == message


def test_alarm_fields_keep_their_meaning() -> None:
    alarm = parse_device_message("alarm", payload(VALID_DEVICE_MESSAGES["alarm"]))
    assert isinstance(alarm, Alarm)
    assert alarm.kind is AlarmKind.PANIC
    assert alarm.ts == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert alarm.position == Position(
        lat=52.5163,
        lon=13.3777,
        accuracy_m=12.5,
        fix_ts=datetime(2025, 3, 1, 11, 59, 58, tzinfo=UTC),
    )


@pytest.mark.parametrize("no_fix", [None, ...], ids=["null", "absent"])
def test_alarm_without_fix_is_valid(no_fix: Any) -> None:
    alarm = parse_device_message("alarm", payload(alarm_with(position=no_fix)))
    assert isinstance(alarm, Alarm)
    assert alarm.position is None


def test_no_fix_is_left_out_of_the_wire_payload() -> None:
    alarm = Alarm(alarm_id="a-1", kind=AlarmKind.TEST, ts=datetime.now(UTC), seq=0)
    wire = json.loads(alarm.to_payload())
    assert "position" not in wire
    assert wire["v"] == 1
    assert wire["type"] == "alarm"


@pytest.mark.parametrize("kind", list(AlarmKind))
def test_every_alarm_kind_is_accepted(kind: AlarmKind) -> None:
    alarm = parse_device_message("alarm", payload(alarm_with(kind=kind.value)))
    assert isinstance(alarm, Alarm)
    assert alarm.kind is kind


def test_hub_messages_validate() -> None:
    ack = HubAck.model_validate_json(
        payload({"v": 1, "type": "ack", "alarm_id": "a-1", "stage": "responder_coming", "ts": TS})
    )
    assert ack.stage is AckStage.RESPONDER_COMING
    command = Command.model_validate_json(
        payload({"v": 1, "type": "cmd", "cmd_id": "c-1", "name": "locate"})
    )
    assert command.args == {}


def test_models_are_immutable() -> None:
    status = Status(state="online", ts=utcnow(), seq=1)
    with pytest.raises(ValueError, match="frozen"):
        status.state = "offline"  # type: ignore[misc]


# -- invalid messages: each gives a ValueError that names the problem ----------------------


def field_error(location: str, message: str) -> str:
    """The regex of pydantic's report line pair: the field's path, then what is wrong with it."""
    return re.escape(location) + r"\n\s+[^\n]*" + re.escape(message)


INVALID_ALARMS: list[tuple[str, dict[str, Any] | bytes, str]] = [
    ("not json", b"{not json", "Invalid JSON"),
    (
        "not utf-8",
        b'{"v": 1, "type": "alarm", "alarm_id": "\xff"}',
        "Invalid JSON: invalid unicode",
    ),
    ("missing alarm_id", alarm_with(alarm_id=...), field_error("alarm.alarm_id", "Field required")),
    ("missing seq", alarm_with(seq=...), field_error("alarm.seq", "Field required")),
    ("unknown field", alarm_with(colour="red"), field_error("alarm.colour", "Extra inputs")),
    ("unknown kind", alarm_with(kind="earthquake"), field_error("alarm.kind", "Input should be")),
    ("wrong version", alarm_with(v=2), field_error("alarm.v", "Input should be 1")),
    ("naive timestamp", alarm_with(ts="2025-03-01T12:00:00"), field_error("alarm.ts", "timezone")),
    ("date only", alarm_with(ts="2025-03-01"), field_error("alarm.ts", "valid datetime")),
    ("negative seq", alarm_with(seq=-1), field_error("alarm.seq", "greater than or equal to 0")),
    ("seq above 2**53-1", alarm_with(seq=2**53), field_error("alarm.seq", "less than or equal")),
    ("battery above 100", alarm_with(battery=101), field_error("alarm.battery", "less than")),
    (
        "latitude out of range",
        alarm_with(position={**FIX, "lat": 90.5}),
        field_error("alarm.position.lat", "less than or equal to 90"),
    ),
    (
        "longitude out of range",
        alarm_with(position={**FIX, "lon": -181}),
        field_error("alarm.position.lon", "greater than or equal to -180"),
    ),
    (
        "negative accuracy",
        alarm_with(position={**FIX, "accuracy_m": -1}),
        field_error("alarm.position.accuracy_m", "greater than or equal to 0"),
    ),
    (
        "fix without time",
        alarm_with(position={"lat": 1, "lon": 2, "accuracy_m": 3}),
        field_error("alarm.position.fix_ts", "Field required"),
    ),
    ("alarm id with slash", alarm_with(alarm_id="a/b"), field_error("alarm.alarm_id", "pattern")),
    ("alarm id too long", alarm_with(alarm_id="a" * 65), field_error("alarm.alarm_id", "pattern")),
    (
        "type missing",
        {k: v for k, v in alarm_with().items() if k != "type"},
        "discriminator 'type'",
    ),
]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(raw, reason) for _, raw, reason in INVALID_ALARMS],
    ids=[name for name, _, _ in INVALID_ALARMS],
)
def test_invalid_alarm_is_refused_with_a_reason(raw: dict[str, Any] | bytes, reason: str) -> None:
    data = raw if isinstance(raw, bytes) else payload(raw)
    with pytest.raises(ValueError, match=reason):
        parse_device_message("alarm", data)


def test_message_on_the_wrong_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="'alarm' was published on channel 'cancel'"):
        parse_device_message("cancel", payload(VALID_DEVICE_MESSAGES["alarm"]))


def test_unknown_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown device channel 'ack'"):
        parse_device_message("ack", payload(VALID_DEVICE_MESSAGES["alarm"]))


def test_oversized_payload_is_refused_before_parsing() -> None:
    big = alarm_with(alarm_id="a-1")
    big_payload = payload(big)[:-1] + b"," + b" " * MAX_PAYLOAD_BYTES + b"}"
    with pytest.raises(ValueError, match=f"exceeds the limit of {MAX_PAYLOAD_BYTES}"):
        parse_device_message("alarm", big_payload)


@pytest.mark.parametrize("value", [10, 86_400])
def test_heartbeat_interval_bounds_are_inclusive(value: int) -> None:
    beat = Heartbeat(ts=datetime.now(UTC), seq=1, interval_s=value)
    assert beat.interval_s == value


@pytest.mark.parametrize("value", [9, 86_401])
def test_heartbeat_interval_outside_bounds_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Heartbeat(ts=datetime.now(UTC), seq=1, interval_s=value)


def test_cancel_code_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="code"):
        Cancel(alarm_id="a-1", ts=datetime.now(UTC), seq=1, code="")


def test_location_needs_a_position() -> None:
    with pytest.raises(ValueError, match="position"):
        Location.model_validate({"ts": TS, "seq": 1})


def test_timestamps_with_an_offset_mean_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    alarm = parse_device_message("alarm", payload(alarm_with(ts="2025-03-01T14:00:00+02:00")))
    assert alarm.ts == datetime(2025, 3, 1, 14, tzinfo=plus_two)
    assert alarm.ts == datetime(2025, 3, 1, 12, tzinfo=UTC)


# -- JSON Schemas -----------------------------------------------------------------------------


def test_shipped_schemas_equal_the_models() -> None:
    expected = json_schemas()
    shipped = {path.stem: json.loads(path.read_text()) for path in SCHEMA_DIR.glob("*.json")}
    assert shipped.keys() == expected.keys(), "run: python -m devicekit.schema"
    for channel, schema in expected.items():
        assert shipped[channel] == schema, (
            f"{channel}.json is stale: run python -m devicekit.schema"
        )


def test_write_schemas_writes_one_file_per_channel(tmp_path: Any) -> None:
    written = write_schemas(tmp_path)
    assert sorted(path.name for path in written) == sorted(f"{c}.json" for c in json_schemas())
    alarm_schema = json.loads((tmp_path / "alarm.json").read_text())
    assert alarm_schema["additionalProperties"] is False
    assert {"alarm_id", "kind", "ts", "seq"} <= set(alarm_schema["required"])


# -- topics -----------------------------------------------------------------------------------


def test_topic_names_follow_protocol_v1() -> None:
    assert topic("wb-0001", "alarm") == "natalia/v1/devices/wb-0001/alarm"
    assert topic("wb-0001", "ack") == "natalia/v1/devices/wb-0001/ack"
    assert subscription("alarm") == "natalia/v1/devices/+/alarm"


@pytest.mark.parametrize(
    "channel", ["alarm", "cancel", "location", "heartbeat", "status", "ack", "cmd"]
)
def test_parse_topic_inverts_topic(channel: str) -> None:
    parsed = parse_topic(topic("wb.7_x-1", channel))
    assert (parsed.device_id, parsed.channel) == ("wb.7_x-1", channel)


@pytest.mark.parametrize(
    "device_id", ["", "+", "#", "a/b", "-leading-dash", "a" * 65, "spa ce", "ümlaut"]
)
def test_device_ids_that_cannot_be_topic_segments_are_refused(device_id: str) -> None:
    with pytest.raises(ValueError, match="invalid device id"):
        validate_device_id(device_id)
    with pytest.raises(ValueError, match="invalid device id"):
        topic(device_id, "alarm")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("natalia/v1/devices/wb-1/alarm/extra", "not a natalia v1 device topic"),
        ("natalia/v2/devices/wb-1/alarm", "not a natalia v1 device topic"),
        ("natalia/v1/devices/wb-1/selfie", "unknown channel 'selfie'"),
        ("natalia/v1/devices/+/alarm", "invalid device id"),
    ],
)
def test_parse_topic_refuses_foreign_topics(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_topic(name)


def test_unknown_channel_has_no_topic() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        topic("wb-1", "selfie")


# -- PROTOCOL.md stays true to the models --------------------------------------------------

PROTOCOL_MD = SCHEMA_DIR.parent / "PROTOCOL.md"
SECTION_MODELS: dict[str, type[BaseModel]] = {
    "Alarm": Alarm,
    "Cancel": Cancel,
    "Location": Location,
    "Heartbeat": Heartbeat,
    "Status": Status,
    "HubAck": HubAck,
    "Command": Command,
    "Position": Position,
}


def protocol_sections() -> dict[str, str]:
    text = PROTOCOL_MD.read_text()
    parts = re.split(r"^### 4\.\d+ (\w+)\n", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def test_protocol_md_documents_every_message() -> None:
    assert protocol_sections().keys() == SECTION_MODELS.keys()


@pytest.mark.parametrize("name", sorted(SECTION_MODELS))
def test_protocol_md_field_table_matches_the_model(name: str) -> None:
    model = SECTION_MODELS[name]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| (yes|no) \|", protocol_sections()[name], re.M)
    documented = dict(rows)
    assert documented.keys() == model.model_fields.keys()
    for field, required in documented.items():
        # v and type have Python defaults for convenience, but the wire requires them.
        expected = field in ("v", "type") or model.model_fields[field].is_required()
        assert (required == "yes") == expected, f"{name}.{field}"


def test_protocol_md_examples_are_valid_messages() -> None:
    blocks = re.findall(r"^```json\n(.*?)^```", PROTOCOL_MD.read_text(), re.DOTALL | re.M)
    assert len(blocks) >= 8
    seen_types = set()
    for block in blocks:
        data = json.loads(block)
        message: HubAck | Command | DeviceMessage
        if data["type"] == "ack":
            message = HubAck.model_validate_json(block)
        elif data["type"] == "cmd":
            message = Command.model_validate_json(block)
        else:
            message = parse_device_message(data["type"], block.encode())
        assert json.loads(message.to_payload()) == data, "examples show the canonical form"
        seen_types.add(data["type"])
    assert seen_types == {"alarm", "cancel", "location", "heartbeat", "status", "ack", "cmd"}


def test_message_without_protocol_version_is_refused() -> None:
    from devicekit.protocol import parse_device_message

    payload = b'{"type": "heartbeat", "ts": "2025-03-01T12:00:00Z", "seq": 1, "interval_s": 60}'
    with pytest.raises(ValueError, match="'v' is missing"):
        parse_device_message("heartbeat", payload)
    parsed = parse_device_message("heartbeat", payload.replace(b"{", b'{"v": 1, ', 1))
    assert isinstance(parsed, Heartbeat) and parsed.seq == 1
