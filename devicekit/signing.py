"""Message signatures and optional payload encryption with the device's own key (PROTOCOL.md §5.5).

Every device message ends with ``"sig"``: HMAC-SHA256 with the device key over the *signing
input*, which is defined on bytes, not on parsed JSON, so firmware never has to canonicalise
numbers or key order::

    signing input = b"natalia-sig-v1" LF topic LF body
    body          = the message's JSON bytes without the sig member (ending in "}")
    wire payload  = body[:-1] + b',"sig":"' + hex(HMAC-SHA256(key, signing input)) + b'"}'

A device that also encrypts sends the envelope ``{"v":1,"type":"encrypted","data":…}`` as the
body, where ``data`` is base64 of ``nonce (12 bytes) || AES-256-GCM ciphertext || tag`` of the
plain message, under ``HMAC-SHA256(key, b"natalia-enc-v1")`` with the topic as associated data.

Only the standard library is needed to sign; encryption needs ``cryptography`` (the ``device``
extra).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from typing import Final

SCHEME: Final = b"natalia-sig-v1"
ENCRYPTION_LABEL: Final = b"natalia-enc-v1"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
_SIG_TAIL: Final = re.compile(rb',"sig":"([0-9a-f]{64})"\}\Z')


class SignatureError(ValueError):
    """A message's signature is missing, malformed or wrong, or its encryption does not open."""


def new_key() -> str:
    """A fresh device key: 32 random bytes as 64 lowercase hex characters."""
    return secrets.token_hex(KEY_BYTES)


def parse_key(text: str) -> bytes:
    """The 32 key bytes of a 64-hex-character device key; ``ValueError`` otherwise."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ValueError("a device key is 64 hexadecimal characters (32 bytes)")
    return key


def signing_input(topic: str, body: bytes) -> bytes:
    """The exact bytes the HMAC covers: scheme, topic and the unsigned body, joined by LF."""
    return SCHEME + b"\n" + topic.encode() + b"\n" + body


def signature(key: bytes, topic: str, body: bytes) -> str:
    """The 64-hex-character HMAC-SHA256 of ``body`` published on ``topic``."""
    return hmac.new(key, signing_input(topic, body), hashlib.sha256).hexdigest()


def sign(key: bytes, topic: str, body: bytes) -> bytes:
    """``body`` (a JSON object with at least one member, ending in ``}``) with its ``sig`` added."""
    if not body.endswith(b"}") or body[:-1].rstrip(b" \t\r\n").endswith(b"{"):
        raise ValueError("only a non-empty JSON object ending in '}' can be signed")
    return body[:-1] + b',"sig":"' + signature(key, topic, body).encode() + b'"}'


def split(payload: bytes) -> tuple[bytes, str | None]:
    """``(body, sig)`` of a signed payload, or ``(payload, None)`` when it carries no signature.

    Raises :class:`SignatureError` when a ``"sig"`` member is there but not in the one form the
    protocol allows: last, exactly ``,"sig":"<64 lowercase hex>"}`` with no whitespace.
    """
    match = _SIG_TAIL.search(payload)
    if match is None:
        if b'"sig"' in payload:
            raise SignatureError(
                'malformed signature: "sig" must be the last member, written exactly as '
                ',"sig":"<64 lowercase hex digits>"} with no spaces'
            )
        return payload, None
    return payload[: match.start()] + b"}", match.group(1).decode()


def verify(key: bytes, topic: str, payload: bytes) -> bytes:
    """The unsigned body of ``payload`` if its signature is right; SignatureError if not."""
    body, sig = split(payload)
    if sig is None:
        raise SignatureError('unsigned message: every message must end with its "sig"')
    if not hmac.compare_digest(signature(key, topic, body), sig):
        raise SignatureError("wrong signature: not made with this device's key for this topic")
    return body


def encryption_key(key: bytes) -> bytes:
    """The AES-256-GCM key derived from the device key (never the signing key itself)."""
    return hmac.new(key, ENCRYPTION_LABEL, hashlib.sha256).digest()


def encrypt(key: bytes, topic: str, body: bytes, nonce: bytes | None = None) -> bytes:
    """The ``encrypted`` envelope (unsigned) holding ``body``; sign it with :func:`sign`.

    ``nonce`` is for test vectors only: a nonce must never repeat under one key.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce is {NONCE_BYTES} bytes")
    sealed = AESGCM(encryption_key(key)).encrypt(nonce, body, topic.encode())
    data = base64.b64encode(nonce + sealed).decode()
    return b'{"v":1,"type":"encrypted","data":"' + data.encode() + b'"}'


def is_encrypted(body: bytes) -> bool:
    """Whether ``body`` is a JSON object whose ``type`` is ``"encrypted"``."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return False
    return isinstance(message, dict) and message.get("type") == "encrypted"


def decrypt(key: bytes, topic: str, body: bytes) -> bytes:
    """The plain message inside an ``encrypted`` envelope; :class:`SignatureError` if it fails."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        envelope = json.loads(body)
        if set(envelope) != {"v", "type", "data"} or not isinstance(envelope["data"], str):
            raise ValueError("fields")
        raw = base64.b64decode(envelope["data"], validate=True)
    except (ValueError, binascii.Error, TypeError, RecursionError):
        raise SignatureError(
            'malformed encrypted envelope: expected {"v":1,"type":"encrypted","data":"<base64>"}'
        ) from None
    if len(raw) < NONCE_BYTES + 16:
        raise SignatureError("encrypted data too short to hold a nonce and a tag")
    try:
        cipher = AESGCM(encryption_key(key))
        return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], topic.encode())
    except InvalidTag:
        raise SignatureError("encrypted data does not open with this device's key") from None
