"""How the hub signs a webhook request. Receivers verify it with ``sdk.webhooks``.

Every delivery is ``POST <url>`` with the event as the JSON body and these headers::

    Content-Type: application/json
    User-Agent: natalia-hub
    Natalia-Event-Id: alarm_event.42          # the same on every retry: de-duplicate on it
    Natalia-Event-Type: alarm.acknowledged
    Natalia-Delivery: 1234                    # this (subscription, event) pair's delivery id
    Natalia-Signature: t=1767225600,v1=<64 lowercase hex digits>

``t`` is the Unix time (seconds) of this attempt; ``v1`` is the lowercase hex
HMAC-SHA256, keyed with the subscription's whole secret (``whsec_...``, UTF-8), over the bytes::

    f"{t}." + raw body            (the timestamp in ASCII digits, a full stop, the body as sent)

Receivers must compute it over the raw bytes received (never over re-serialised JSON), compare
in constant time, and refuse a ``t`` more than a few minutes from their own clock (replays).
The header may carry several ``v1=`` values (one per secret while a secret is rotated): one
matching value is enough; unknown schemes (``v2=``...) are ignored.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Natalia-Signature"
USER_AGENT = "natalia-hub"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``v1`` value: hex HMAC-SHA256(secret, f"{timestamp}." + body)."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def headers(
    secrets: list[str],
    timestamp: int,
    body: bytes,
    event_id: str,
    event_type: str,
    delivery_id: int,
) -> dict[str, str]:
    """Every header of one attempt; one ``v1`` per secret (several only during a rotation)."""
    signed = ",".join(f"v1={signature(secret, timestamp, body)}" for secret in secrets)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Natalia-Event-Id": event_id,
        "Natalia-Event-Type": event_type,
        "Natalia-Delivery": str(delivery_id),
        SIGNATURE_HEADER: f"t={timestamp},{signed}",
    }
