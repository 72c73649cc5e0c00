"""The receiver's side of webhooks (``sdk.webhooks``) against the hub's signer, and the
documented example byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub.webhooks import signing
from sdk.webhooks import WebhookSignatureError, parse_event, verify_signature

SECRET = "whsec_" + "s" * 43
BODY = (
    b'{"id":"alarm_event.7","type":"alarm.resolved","created_at":"2026-01-01T00:00:00Z","data":{}}'
)
NOW = 1_767_225_600


def signed(body: bytes = BODY, secrets: list[str] | None = None, at: int = NOW) -> str:
    headers = signing.headers(secrets or [SECRET], at, body, "alarm_event.7", "alarm.resolved", 3)
    return headers["Natalia-Signature"]


def test_a_genuine_request_verifies_and_parses() -> None:
    verify_signature(BODY, signed(), SECRET, now=NOW + 10)
    event = parse_event(BODY, signed(), SECRET, now=NOW)
    assert (event.id, event.type, event.data) == ("alarm_event.7", "alarm.resolved", {})


@pytest.mark.parametrize(
    ("body", "header", "secret", "message"),
    [
        (BODY.replace(b"resolved", b"cancelled"), signed(), SECRET, "does not match"),
        (BODY + b" ", signed(), SECRET, "does not match"),
        (BODY, signed(), "whsec_wrong", "does not match"),
        (BODY, signed(at=NOW - 301), SECRET, "from this machine's clock"),
        (BODY, signed(at=NOW + 301), SECRET, "from this machine's clock"),
        (BODY, signed().replace(f"t={NOW}", f"t={NOW + 1}"), SECRET, "does not match"),
        (BODY, f"v1={'0' * 64}", SECRET, "no timestamp"),
        (BODY, f"t={NOW}", SECRET, "no v1 signature"),
        (BODY, f"t={NOW},v0={'0' * 64}", SECRET, "no v1 signature"),
        (BODY, f"t=soon,v1={'0' * 64}", SECRET, "t must be"),
        (BODY, f"t={NOW},t={NOW},{signed()}", SECRET, "t must be"),
        (BODY, "", SECRET, "no timestamp"),
        (BODY, signed(), "", "no webhook secret"),
    ],
    ids=[
        "tampered body",
        "one byte more",
        "wrong secret",
        "too old",
        "from the future",
        "timestamp changed",
        "no timestamp",
        "no signature",
        "unknown scheme only",
        "timestamp not a number",
        "two timestamps",
        "empty header",
        "empty secret",
    ],
)
def test_anything_else_is_refused(body: bytes, header: str, secret: str, message: str) -> None:
    with pytest.raises(WebhookSignatureError, match=message):
        verify_signature(body, header, secret, now=NOW)


def test_rotated_secrets_verify_on_either_side() -> None:
    new = "whsec_" + "n" * 43
    both = signed(secrets=[SECRET, new])  # the hub signing with the old and the new secret
    assert both.count("v1=") == 2
    verify_signature(BODY, both, SECRET, now=NOW)
    verify_signature(BODY, both, new, now=NOW)
    verify_signature(BODY, signed(secrets=[new]), [SECRET, new], now=NOW)  # receiver accepts both
    with pytest.raises(WebhookSignatureError):
        verify_signature(BODY, both, "whsec_neither", now=NOW)


def test_unknown_schemes_and_spaces_are_tolerated() -> None:
    header = signed().replace(",v1=", ", v2=abc, v1=")
    verify_signature(BODY, header, SECRET, now=NOW)


def test_the_documented_example_is_right() -> None:
    readme = (Path(__file__).parents[1] / "hub" / "api" / "README.md").read_text()
    section = readme[readme.index("## Webhooks: signing and retries") :]
    secret = re.search(r"secret `(whsec_\w+)`", section)
    timestamp = re.search(r"`t=(\d+)`", section)
    body = re.search(r"the body\n`([^`]+)`", section)
    value = re.search(r"give `v1=([0-9a-f]{64})`", section)
    assert secret and timestamp and body and value, "the README's signing example moved"
    header = f"t={timestamp[1]},v1={value[1]}"
    assert signing.signature(secret[1], int(timestamp[1]), body[1].encode()) == value[1]
    verify_signature(body[1].encode(), header, secret[1], now=int(timestamp[1]))
