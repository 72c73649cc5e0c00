"""Property-based tests of what a wristband (or anyone with its password) can send over MQTT:
device payloads on every channel, topic names, signatures and encrypted envelopes.

Hostile input gets a parsed model or a ``ValueError`` with a reason, never another exception;
valid messages round-trip. Case counts: tests/support/hypothesis.py (``make fuzz`` runs many).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from devicekit import protocol, signing
from devicekit.topics import DeviceTopic, parse_topic, topic
from tests.support.hypothesis import (
    any_device_message,
    dumps,
    fuzz,
    hostile_bytes,
    ids,
    json_values,
    mutated_payloads,
    parsed_or_refused,
)

DEEP = b"[" * 20_000
CHANNELS = st.sampled_from(protocol.DEVICE_CHANNELS)


@fuzz(weight=2)
@given(channel=CHANNELS | st.text(max_size=12), payload=hostile_bytes)
@example(channel="alarm", payload=DEEP)
@example(channel="alarm", payload=b'{"v":1,"type":"alarm","alarm_id":' + DEEP + b"}")
@example(channel="status", payload=b'\xef\xbb\xbf{"v":1,"type":"status","state":"online"}')
@example(channel="status", payload=b'{"v":1,"type":"status","state":"online\xff"}')
def test_any_bytes_give_a_message_or_a_value_error(channel: str, payload: bytes) -> None:
    parsed_or_refused(protocol.parse_device_message, channel, payload)


def model_shaped_objects(channel: str) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with the channel's own keys (and sometimes v and type) holding any values."""
    model = protocol.CHANNEL_MODELS[channel]
    keys = {name: json_values for name in model.model_fields if name not in ("v", "type")}
    if "position" in keys:
        keys["position"] = st.none() | st.fixed_dictionaries(
            {}, optional={name: json_values for name in protocol.Position.model_fields}
        )
    return st.fixed_dictionaries(
        {"v": st.just(1) | json_values, "type": st.just(channel) | json_values}, optional=keys
    )


@fuzz(weight=2)
@given(data=st.data(), channel=CHANNELS)
def test_objects_with_the_schemas_keys_give_a_message_or_a_value_error(
    data: st.DataObject, channel: str
) -> None:
    payload = dumps(data.draw(model_shaped_objects(channel)))
    message = parsed_or_refused(protocol.parse_device_message, channel, payload)
    if message is not None:  # whatever is accepted is accepted again, unchanged
        assert protocol.parse_device_message(channel, message.to_payload()) == message


@fuzz(weight=2)
@given(message=any_device_message())
def test_valid_messages_round_trip(message: Any) -> None:
    payload = message.to_payload()
    assert len(payload) <= protocol.MAX_PAYLOAD_BYTES
    assert protocol.parse_device_message(message.type, payload) == message


STATUS = b'"type":"status","state":"online","ts":"2026-01-01T00:00:00Z","seq":1}'


@fuzz(weight=3)
@given(case=mutated_payloads())
@example(case=("status", b'{"v":true,' + STATUS, "version"))  # true == 1 in Python
@example(case=("status", b'{"v":1.0,' + STATUS, "version"))
@example(
    case=(
        "status",
        b'{"v":1,' + STATUS.replace(b"2026-01-01T00:00:00Z", b"0001-01-01T00:00:00+05:00"),
        "time",
    )
)
@example(
    case=(
        "status",
        b'{"v":1,' + STATUS.replace(b"2026-01-01T00:00:00Z", b"9999-12-31T23:00:00-05:00"),
        "time",
    )
)
def test_broken_valid_messages_are_refused(case: tuple[str, bytes, str]) -> None:
    channel, payload, how = case
    with pytest.raises(ValueError) as refused:
        protocol.parse_device_message(channel, payload)
    assert str(refused.value).strip(), how


@fuzz()
@given(name=st.text(max_size=80) | st.lists(st.text(max_size=12), max_size=7).map("/".join))
@example(name="natalia/v1/devices/wb-1/alarm/")
@example(name="natalia/v1/devices/+/alarm")
@example(name="natalia/v1/devices/wb\x00/alarm")
def test_any_topic_name_gives_a_device_topic_or_a_value_error(name: str) -> None:
    parsed = parsed_or_refused(parse_topic, name)
    if parsed is not None:
        assert topic(parsed.device_id, parsed.channel) == name


@fuzz()
@given(device_id=ids, channel=st.sampled_from(protocol.DEVICE_CHANNELS + protocol.HUB_CHANNELS))
def test_device_topics_round_trip(device_id: str, channel: str) -> None:
    assert parse_topic(topic(device_id, channel)) == DeviceTopic(device_id, channel)


# -- signatures and encrypted envelopes (devicekit.signing) ---------------------------------------

keys = st.binary(min_size=signing.KEY_BYTES, max_size=signing.KEY_BYTES)
topics = st.text(min_size=1, max_size=60)
bodies = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, min_size=1, max_size=5).map(dumps),
    st.binary(max_size=200).map(lambda raw: b'{"x":"' + raw + b'"}'),
)


@fuzz()
@given(key=keys, name=topics, body=bodies)
def test_signed_messages_verify_with_their_key_and_topic(
    key: bytes, name: str, body: bytes
) -> None:
    signed = signing.sign(key, name, body)
    assert signing.verify(key, name, signed) == body
    assert signing.split(signed) == (body, signing.signature(key, name, body))


@fuzz(weight=3)
@given(key=keys, name=topics, body=bodies, data=st.data())
def test_any_single_byte_change_breaks_the_signature(
    key: bytes, name: str, body: bytes, data: st.DataObject
) -> None:
    signed = signing.sign(key, name, body)
    index = data.draw(st.integers(min_value=0, max_value=len(signed) - 1), label="index")
    byte = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != signed[index]))
    changed = signed[:index] + bytes([byte]) + signed[index + 1 :]
    with pytest.raises(signing.SignatureError):
        signing.verify(key, name, changed)


@fuzz()
@given(key=keys, other=keys, name=topics, other_topic=topics, body=bodies)
def test_another_key_or_topic_does_not_verify(
    key: bytes, other: bytes, name: str, other_topic: str, body: bytes
) -> None:
    signed = signing.sign(key, name, body)
    if other != key:
        with pytest.raises(signing.SignatureError):
            signing.verify(other, name, signed)
    if other_topic != name:
        with pytest.raises(signing.SignatureError):
            signing.verify(key, other_topic, signed)


@fuzz(weight=2)
@given(key=keys, name=topics, payload=hostile_bytes | bodies)
@example(key=b"k" * 32, name="t", payload=DEEP)
@example(key=b"k" * 32, name="t", payload=b'{"v":1,"type":"encrypted","data":' + DEEP + b"}")
@example(key=b"k" * 32, name="t", payload=b'{"v":1,"type":"encrypted","data":"\xff"}')
@example(key=b"k" * 32, name="t", payload=b'{"v":1,"type":"encrypted","data":"\\u00e9"}')
def test_hostile_bytes_raise_only_signature_or_value_errors(
    key: bytes, name: str, payload: bytes
) -> None:
    for check in (
        lambda: signing.split(payload),
        lambda: signing.verify(key, name, payload),
        lambda: signing.decrypt(key, name, payload),
        lambda: signing.is_encrypted(payload),
    ):
        try:
            check()
        except ValueError as exc:  # SignatureError is one
            assert str(exc)


@fuzz()
@given(key=keys, name=topics, body=bodies, data=st.data())
def test_encrypted_envelopes_open_to_their_body_or_not_at_all(
    key: bytes, name: str, body: bytes, data: st.DataObject
) -> None:
    envelope = signing.encrypt(key, name, body)
    assert signing.is_encrypted(envelope)
    assert signing.decrypt(key, name, envelope) == body
    index = data.draw(st.integers(min_value=0, max_value=len(envelope) - 1), label="index")
    byte = data.draw(st.sampled_from(b'AZaz09+/="{}x'))
    changed = envelope[:index] + bytes([byte]) + envelope[index + 1 :]
    # The signature over the envelope catches every change; the envelope itself only promises
    # that it never opens to anything but the body that was sealed.
    try:
        assert signing.decrypt(key, name, changed) == body
    except signing.SignatureError as exc:
        assert str(exc)
    with pytest.raises(signing.SignatureError):
        signing.decrypt(key, name + "/x", envelope)
