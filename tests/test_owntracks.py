"""OwnTracks messages as the real apps publish them (https://owntracks.org/booklet/tech/json/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from hub.owntracks import (
    MAX_PAYLOAD_BYTES,
    OTHER_TYPES,
    SUBSCRIPTION,
    OwnTracksLocation,
    parse_owntracks,
    parse_topic,
)

TOPIC = "owntracks/ana/phone"

#: The booklet's minimal example (Traccar page): what every app version sends at least.
BOOKLET_MINIMAL = b'{"lon":2.29513,"lat":48.85833,"_type":"location","tst":1497476456, "tid":"JJ"}'

#: An Android app location (Jackson, NON_EMPTY: zero acc/alt/vel are left out), with the
#: elements of recent versions: battery status, monitoring mode, created_at, message id.
ANDROID = json.dumps(
    {
        "_type": "location",
        "_id": "2b3e41c8",
        "acc": 17,
        "batt": 80,
        "bs": 1,
        "conn": "m",
        "created_at": 1532102003,
        "lat": -22.9836,
        "lon": -43.21782,
        "m": 1,
        "t": "p",
        "tid": "n5",
        "tst": 1532102000,
        "inregions": ["Home"],
        "inrids": ["5f1d2c"],
    }
).encode()

#: An iOS app location with extended data (pressure, Wi-Fi) and its float elements.
IOS = json.dumps(
    {
        "_type": "location",
        "acc": 5,
        "alt": 22,
        "batt": 64,
        "bs": 2,
        "cog": 270,
        "conn": "w",
        "created_at": 1700000012,
        "lat": 59.332600,
        "lon": 18.064900,
        "p": 101.325,
        "SSID": "CafeNet",
        "BSSID": "b0:48:7a:aa:bb:cc",
        "t": "u",
        "tid": "an",
        "tst": 1700000010,
        "vac": 3,
        "vel": 4,
    }
).encode()

#: The other messages the apps publish, one per ``_type`` (booklet examples).
OTHER_MESSAGES = {
    "lwt": {"_type": "lwt", "tst": 1380738247},
    "transition": {
        "_type": "transition",
        "wtst": 1425042603,
        "lat": 12.34,
        "lon": 44.5,
        "tst": 1427634603,
        "acc": 130,
        "tid": "JP",
        "event": "enter",
        "desc": "my Indian restaurant",
        "t": "b",
    },
    "waypoint": {"_type": "waypoint", "desc": "Home", "lat": 1.5, "lon": 2.5, "rad": 50,
                 "tst": 1425042603},
    "waypoints": {"_type": "waypoints", "waypoints": []},
    "card": {"_type": "card", "name": "Ana", "face": "iVBORw0KGgo=", "tid": "an"},
    "cmd": {"_type": "cmd", "action": "reportLocation"},
    "configuration": {"_type": "configuration", "mode": 0, "pubRetain": False},
    "encrypted": {"_type": "encrypted", "data": "aGVsbG8="},
    "status": {"_type": "status", "android": {"wifi": 1}},
    "steps": {"_type": "steps", "tst": 1, "steps": -1, "from": 0, "to": 1},
    "beacon": {"_type": "beacon", "uuid": "x", "major": 1, "minor": 2, "tst": 1, "acc": 1},
    "request": {"_type": "request", "request": "tour"},
}  # fmt: skip


def location(**elements: object) -> bytes:
    return json.dumps({"_type": "location", "lat": 59.3326, "lon": 18.0649, "tst": 1700000000,
                       **elements}).encode()  # fmt: skip


def test_booklet_minimal_location_is_parsed() -> None:
    parsed = parse_owntracks(TOPIC, BOOKLET_MINIMAL)
    assert parsed is not None
    assert (parsed.user, parsed.device) == ("ana", "phone")
    assert (parsed.lat, parsed.lon, parsed.tst, parsed.acc) == (48.85833, 2.29513, 1497476456, None)
    assert parsed.tid == "JJ"
    assert parsed.fix_time == datetime(2017, 6, 14, 21, 40, 56, tzinfo=UTC)


def test_android_location_is_parsed_with_its_optional_elements() -> None:
    parsed = parse_owntracks("owntracks/ana/pixel-7", ANDROID)
    assert parsed is not None
    assert (parsed.lat, parsed.lon, parsed.acc, parsed.tst) == (-22.9836, -43.21782, 17, 1532102000)
    assert (parsed.batt, parsed.bs, parsed.conn, parsed.m, parsed.t) == (80, 1, "m", 1, "p")
    assert parsed.created_at == 1532102003
    assert parsed.inregions == ["Home"] and parsed.inrids == ["5f1d2c"]
    assert parsed.device == "pixel-7"


def test_ios_location_is_parsed_with_extended_data() -> None:
    parsed = parse_owntracks(TOPIC, IOS)
    assert parsed is not None
    assert (parsed.acc, parsed.alt, parsed.vac, parsed.vel, parsed.cog) == (5, 22, 3, 4, 270)
    assert (parsed.p, parsed.SSID, parsed.BSSID) == (101.325, "CafeNet", "b0:48:7a:aa:bb:cc")


@pytest.mark.parametrize("kind", sorted(OTHER_MESSAGES))
def test_other_message_types_of_the_app_are_not_locations(kind: str) -> None:
    assert parse_owntracks(TOPIC, json.dumps(OTHER_MESSAGES[kind]).encode()) is None


def test_every_other_type_of_the_booklet_is_covered() -> None:
    assert set(OTHER_MESSAGES) == OTHER_TYPES


def test_unknown_elements_are_ignored() -> None:
    parsed = parse_owntracks(TOPIC, location(future_element={"x": [1, 2]}, odometer=12.5))
    assert parsed is not None
    assert not hasattr(parsed, "future_element")


def test_identity_comes_from_the_topic_not_from_the_payload() -> None:
    parsed = parse_owntracks(
        TOPIC, location(user="mallory", device="evil", topic="owntracks/mallory/evil")
    )
    assert parsed is not None
    assert (parsed.user, parsed.device) == ("ana", "phone")


def test_odd_optional_element_does_not_cost_the_position() -> None:
    payload = location(acc=8, batt="full", vel="HUGE", inregions="Home", tid=7)
    parsed = parse_owntracks(TOPIC, payload.replace(b'"HUGE"', b"1e999"))
    assert parsed is not None
    assert (parsed.acc, parsed.batt, parsed.vel, parsed.inregions, parsed.tid) == (
        8, None, None, None, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "payload is not JSON"),
        (b'{"_type":"location",', "payload is not JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8|not JSON"),
        (b'["location"]', "payload is a JSON list"),
        (b'"location"', "payload is a JSON str"),
        (b'{"lat": 1, "lon": 2, "tst": 3}', "no _type"),
        (b'{"_type": 5}', "no _type"),
        (b'{"_type": "locationx"}', "unknown OwnTracks _type 'locationx'"),
        (location(tst=None), "tst: Input should be a valid integer"),
        (b'{"_type":"location","lat":1.0,"lon":2.0}', "tst is missing"),
        (location(tst="1700000000"), "tst: Input should be a valid integer"),
        (location(tst=1700000000.5), "tst: Input should be a valid integer"),
        (location(tst=True), "tst: Input should be a valid integer"),
        (location(tst=0), "tst: Input should be greater than 0"),
        (location(tst=10**13), "tst: Input should be less than or equal to"),
        (location(lat=90.000001), "lat: Input should be less than or equal to 90"),
        (location(lat=-90.5), "lat: Input should be greater than or equal to -90"),
        (location(lon=180.25), "lon: Input should be less than or equal to 180"),
        (location(lon=-181.0), "lon: Input should be greater than or equal to -180"),
        (location(lat="59.3"), "lat: Input should be a valid number"),
        (location(lat=None), "lat: Input should be a valid number"),
        (b'{"_type":"location","lon":18.0,"tst":1700000000}', "lat is missing"),
        (
            b'{"_type":"location","lat":NaN,"lon":18.0,"tst":1700000000}',
            "not usable JSON: NaN is not a number",
        ),
        (b'{"_type":"location","lat":1,"lon":-Infinity,"tst":1}', "-Infinity is not a number"),
        (b'{"_type":"location","lat":1e999,"lon":18.0,"tst":1}', "lat: Input should be a finite"),
        (location(acc=-1), "acc: Input should be greater than or equal to 0"),
        (b'{"_type":"location","lat":1,"lon":1,"tst":' + b"9" * 5000 + b"}", "not usable JSON"),
        (location(acc="12"), "acc: Input should be a valid number"),
        (b"[" * 10_000 + b"]" * 10_000, "larger than 16384"),
        (b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", "larger than 16384"),
    ],
)
def test_malformed_message_is_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_owntracks(TOPIC, payload)


def test_deeply_nested_json_within_the_size_limit_is_refused_not_crashed() -> None:
    depth = MAX_PAYLOAD_BYTES // 2 - 1
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_owntracks(TOPIC, b"[" * depth + b"]" * depth)


def test_reason_never_contains_the_coordinates() -> None:
    with pytest.raises(ValueError) as caught:
        parse_owntracks(TOPIC, location(lat=91.123456, lon=-200.654321, acc=-7.25))
    reason = str(caught.value)
    assert "lat:" in reason and "lon:" in reason and "acc:" in reason
    for secret in ("91.123456", "200.654321", "7.25"):
        assert secret not in reason


def test_repr_of_a_location_hides_coordinates_and_networks() -> None:
    parsed = parse_owntracks(TOPIC, IOS)
    assert parsed is not None
    text = repr(parsed) + str(parsed)
    for secret in ("59.3326", "18.0649", "CafeNet", "b0:48:7a"):
        assert secret not in text
    assert "tst=1700000010" in text


def test_location_is_immutable() -> None:
    parsed = parse_owntracks(TOPIC, BOOKLET_MINIMAL)
    assert isinstance(parsed, OwnTracksLocation)
    with pytest.raises(ValueError, match="frozen"):
        parsed.lat = 0.0  # type: ignore[misc]


def test_topic_gives_user_and_device() -> None:
    assert parse_topic("owntracks/ana/phone") == ("ana", "phone")
    assert parse_topic("owntracks/Ana.B_2/iPhone-15") == ("Ana.B_2", "iPhone-15")
    assert SUBSCRIPTION == "owntracks/+/+"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("owntracks/ana", "not an OwnTracks location topic"),
        ("owntracks/ana/phone/event", "not an OwnTracks location topic"),
        ("natalia/v1/devices/wb-1/alarm", "not an OwnTracks location topic"),
        ("OwnTracks/ana/phone", "not an OwnTracks location topic"),
        ("owntracks//phone", "invalid OwnTracks user ''"),
        ("owntracks/$SYS/phone", "invalid OwnTracks user"),
        ("owntracks/" + "a" * 65 + "/phone", "invalid OwnTracks user"),
        ("owntracks/ana/Ana's iPhone", "invalid OwnTracks device id"),
        ("owntracks/ana/", "invalid OwnTracks device id"),
    ],
)
def test_malformed_topic_is_refused(topic: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_owntracks(topic, BOOKLET_MINIMAL)
