"""Property-based tests of the OwnTracks parser (hub/owntracks.py): any phone that holds a
responder's password can publish anything on ``owntracks/{user}/+``.

Every payload gives a location, ``None`` (one of the app's other message types) or a
``ValueError`` with a reason that never quotes a coordinate; valid locations round-trip.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from hub.owntracks import MAX_PAYLOAD_BYTES, OTHER_TYPES, OwnTracksLocation, parse_owntracks
from hub.owntracks import parse_topic as parse_owntracks_topic
from tests.support.hypothesis import (
    dumps,
    fuzz,
    hostile_bytes,
    ids,
    json_values,
    parsed_or_refused,
)

TOPIC = "owntracks/ana/phone"
FIELDS = [name for name in OwnTracksLocation.model_fields if name not in ("user", "device")]
FIELDS = ["_type" if name == "message_type" else name for name in FIELDS]


@fuzz(weight=2)
@given(payload=hostile_bytes)
@example(payload=b"[" * 20_000)
@example(payload=b'{"_type":"location","lat":' + b"[" * 8000 + b"}")
@example(payload=b'{"_type":"location","lat":1,"lon":2,"tst":' + b"9" * 5000 + b"}")
@example(payload=b'\xef\xbb\xbf{"_type":"location","lat":1,"lon":2,"tst":3}')
def test_any_bytes_give_a_location_none_or_a_value_error(payload: bytes) -> None:
    parsed_or_refused(parse_owntracks, TOPIC, payload)


#: Values the app sends for each element, and anything else JSON allows.
owntracks_objects = st.fixed_dictionaries(
    {"_type": st.just("location") | st.sampled_from(sorted(OTHER_TYPES)) | json_values},
    optional={name: json_values for name in FIELDS if name != "_type"}
    | {"lat": st.floats(-91, 91) | json_values, "lon": st.floats(-181, 181) | json_values},
)


@fuzz(weight=2)
@given(message=owntracks_objects, nan=st.sampled_from(["", "NaN", "Infinity", "-Infinity"]))
def test_any_object_gives_a_location_none_or_a_value_error(
    message: dict[str, Any], nan: str
) -> None:
    payload = dumps(message)
    if nan:  # a non-finite number in place of one element
        key = sorted(message)[len(payload) % len(message)]
        payload = dumps({**message, key: "NONFINITE"}).replace(b'"NONFINITE"', nan.encode())
    location = parsed_or_refused(parse_owntracks, TOPIC, payload)
    if location is not None:
        assert -90 <= location.lat <= 90 and -180 <= location.lon <= 180
        assert location.tst > 0 and (location.acc is None or location.acc >= 0)


def _without_coordinates(reason: str, message: dict[str, Any]) -> None:
    for key in ("lat", "lon"):
        value = message.get(key)
        if isinstance(value, float) and len(repr(value)) > 6:
            assert repr(value) not in reason, (key, reason)


valid_locations = st.fixed_dictionaries(
    {
        "_type": st.just("location"),
        "lat": st.floats(-90, 90),
        "lon": st.floats(-180, 180),
        "tst": st.integers(min_value=1, max_value=253_402_300_799),
    },
    optional={
        "acc": st.floats(min_value=0, allow_infinity=False),
        "alt": st.floats(allow_nan=False, allow_infinity=False),
        "vel": st.floats(allow_nan=False, allow_infinity=False),
        "batt": st.integers(min_value=0, max_value=100),
        "bs": st.integers(min_value=0, max_value=3),
        "tid": st.text(max_size=2),
        "t": st.sampled_from(["p", "c", "b", "r", "u", "t", "v"]),
        "conn": st.sampled_from(["w", "o", "m"]),
        "created_at": st.integers(min_value=1, max_value=2**31),
        "SSID": st.text(max_size=32),
        "inregions": st.lists(st.text(max_size=10), max_size=3),
        "_id": st.text(max_size=8),  # unknown to us: ignored
    },
)


@fuzz(weight=2)
@given(message=valid_locations, user=ids, device=ids)
def test_valid_locations_round_trip(message: dict[str, Any], user: str, device: str) -> None:
    topic = f"owntracks/{user}/{device}"
    location = parse_owntracks(topic, dumps(message))
    assert location is not None
    assert (location.user, location.device) == (user, device)
    assert (location.lat, location.lon, location.tst) == (
        message["lat"],
        message["lon"],
        message["tst"],
    )
    again = location.model_dump_json(by_alias=True, exclude={"user", "device"}, exclude_none=True)
    assert len(again) <= MAX_PAYLOAD_BYTES
    assert parse_owntracks(topic, again.encode()) == location


@fuzz(weight=2)
@given(message=valid_locations, key=st.sampled_from(["lat", "lon", "tst"]), data=st.data())
def test_a_location_without_usable_coordinates_or_time_is_refused_without_quoting_it(
    message: dict[str, Any], key: str, data: st.DataObject
) -> None:
    broken = {**message}
    if data.draw(st.booleans(), label="drop"):
        del broken[key]
    else:
        bad = {
            "lat": st.floats(min_value=90, exclude_min=True),
            "lon": st.floats(max_value=-180, exclude_max=True),
        }
        broken[key] = data.draw(
            bad.get(key, st.integers(max_value=0)) | st.text(max_size=5) | st.booleans() | st.none()
        )
    try:
        parse_owntracks(TOPIC, json.dumps(broken).encode())
    except ValueError as exc:
        _without_coordinates(str(exc), message)
    else:
        raise AssertionError(f"accepted a location with {key}={broken.get(key)!r}")


@fuzz()
@given(topic=st.text(max_size=60) | st.lists(st.text(max_size=10), max_size=5).map("/".join))
@example(topic="owntracks/ana/phone/event")
@example(topic="owntracks/+/phone")
def test_any_topic_gives_user_and_device_or_a_value_error(topic: str) -> None:
    parsed = parsed_or_refused(parse_owntracks_topic, topic)
    if parsed is not None:
        assert f"owntracks/{parsed.user}/{parsed.device}" == topic
