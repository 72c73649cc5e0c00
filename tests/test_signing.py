"""Signatures and encryption with the device key: the spec's test vectors and the edge cases."""

from __future__ import annotations

import re

import pytest

from devicekit import signing
from devicekit.signing import SignatureError
from tests.test_devicekit_protocol import PROTOCOL_MD

KEY = bytes(range(32))
TOPIC = "natalia/v1/devices/wb-1/alarm"
BODY = b'{"v":1,"type":"alarm","seq":1}'


def spec_vectors() -> list[dict[str, str]]:
    """Each ```text block of PROTOCOL.md section 5.5 as its ``name: value`` lines."""
    blocks = re.findall(r"^```text\n(.*?)^```", PROTOCOL_MD.read_text(), re.DOTALL | re.M)
    vectors = [dict(line.split(": ", 1) for line in block.splitlines()) for block in blocks]
    return [vector for vector in vectors if "wire" in vector]


def test_the_spec_has_a_signing_and_an_encryption_vector() -> None:
    vectors = spec_vectors()
    assert len(vectors) == 2
    assert ["nonce" in vector for vector in vectors] == [False, True]


def test_signature_vector_is_reproduced_byte_for_byte() -> None:
    vector = spec_vectors()[0]
    key, topic, body = signing.parse_key(vector["key"]), vector["topic"], vector["body"].encode()
    assert signing.signature(key, topic, body) == vector["sig"]
    assert signing.sign(key, topic, body) == vector["wire"].encode()
    assert signing.verify(key, topic, vector["wire"].encode()) == body


def test_encryption_vector_is_reproduced_byte_for_byte() -> None:
    vector = spec_vectors()[1]
    key, topic, body = signing.parse_key(vector["key"]), vector["topic"], vector["body"].encode()
    assert signing.encryption_key(key).hex() == vector["encryption key"]
    envelope = signing.encrypt(key, topic, body, nonce=bytes.fromhex(vector["nonce"]))
    assert signing.sign(key, topic, envelope) == vector["wire"].encode()
    opened = signing.verify(key, topic, vector["wire"].encode())
    assert signing.is_encrypted(opened)
    assert signing.decrypt(key, topic, opened) == body


def test_signing_input_is_scheme_topic_and_body_joined_by_line_feeds() -> None:
    assert signing.signing_input(TOPIC, BODY) == b"natalia-sig-v1\n" + TOPIC.encode() + b"\n" + BODY


def test_a_signature_does_not_carry_over_to_another_topic_or_key() -> None:
    wire = signing.sign(KEY, TOPIC, BODY)
    with pytest.raises(SignatureError, match="wrong signature"):
        signing.verify(KEY, TOPIC.replace("/alarm", "/heartbeat"), wire)
    with pytest.raises(SignatureError, match="wrong signature"):
        signing.verify(bytes(32), TOPIC, wire)
    with pytest.raises(SignatureError, match="wrong signature"):
        signing.verify(KEY, TOPIC, wire.replace(b'"seq":1', b'"seq":2'))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (BODY, "unsigned message"),
        (b'{"sig":"' + b"0" * 64 + b'","v":1}', "malformed signature"),  # not the last member
        (BODY[:-1] + b',"sig":"' + b"A" * 64 + b'"}', "malformed signature"),  # upper case
        (BODY[:-1] + b', "sig": "' + b"0" * 64 + b'"}', "malformed signature"),  # whitespace
        (BODY[:-1] + b',"sig":"' + b"0" * 63 + b'"}', "malformed signature"),  # too short
    ],
    ids=["unsigned", "not-last", "upper-case", "whitespace", "short"],
)
def test_a_signature_in_any_other_form_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        signing.verify(KEY, TOPIC, payload)


@pytest.mark.parametrize("body", [b"", b"{}", b" {} ", b"[1]", b'{"v":1} '])
def test_only_a_non_empty_object_ending_in_a_brace_can_be_signed(body: bytes) -> None:
    with pytest.raises(ValueError, match="can be signed"):
        signing.sign(KEY, TOPIC, body)


def test_encryption_uses_a_fresh_nonce_and_binds_the_topic() -> None:
    first, second = (signing.encrypt(KEY, TOPIC, BODY) for _ in range(2))
    assert first != second
    assert BODY not in first
    with pytest.raises(SignatureError, match="does not open"):
        signing.decrypt(KEY, TOPIC.replace("wb-1", "wb-2"), first)
    with pytest.raises(SignatureError, match="does not open"):
        signing.decrypt(bytes(32), TOPIC, first)


@pytest.mark.parametrize(
    "envelope",
    [
        b'{"v":1,"type":"encrypted"}',
        b'{"v":1,"type":"encrypted","data":"not base64!"}',
        b'{"v":1,"type":"encrypted","data":"AAAA"}',
        b'{"v":1,"type":"encrypted","data":1}',
        b'{"v":1,"type":"encrypted","data":"","extra":1}',
        b"[]",
    ],
)
def test_a_malformed_envelope_is_a_signature_error(envelope: bytes) -> None:
    with pytest.raises(SignatureError):
        signing.decrypt(KEY, TOPIC, envelope)


@pytest.mark.parametrize("text", ["", "00", "zz" * 32, "0" * 63, "0" * 66])
def test_a_key_is_64_hex_characters(text: str) -> None:
    with pytest.raises(ValueError, match="64 hexadecimal"):
        signing.parse_key(text)


def test_new_keys_are_random_and_well_formed() -> None:
    keys = {signing.new_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(signing.parse_key(key)) == 32 for key in keys)
