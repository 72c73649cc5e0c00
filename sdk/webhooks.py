"""Receiving the hub's webhooks: check the signature, then trust the event.

Every webhook request carries ``Natalia-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is
HMAC-SHA256 keyed with the webhook's secret (``whsec_...``) over ``f"{t}."`` followed by the raw
request body. Verify over the exact bytes received — before parsing them::

    from sdk.webhooks import WebhookSignatureError, parse_event

    @app.post("/natalia")
    async def natalia(request: Request) -> Response:
        try:
            event = parse_event(
                await request.body(), request.headers["Natalia-Signature"], SECRET
            )
        except (KeyError, WebhookSignatureError):
            return Response(status_code=400)
        if already_seen(event.id):  # retries and restarts repeat an event: same id
            return Response(status_code=200)
        ...
        return Response(status_code=200)  # any 2xx; anything else is retried

Answer quickly (any 2xx means delivered; other answers, timeouts and connection errors are
retried with backoff for up to a day) and do slow work afterwards. Events may arrive more than
once and out of order. ``410 Gone`` tells the hub to stop sending to this URL for good.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from sdk.models import WebhookEvent

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "SIGNATURE_HEADER",
    "WebhookSignatureError",
    "parse_event",
    "verify_signature",
]

SIGNATURE_HEADER = "Natalia-Signature"
#: Signatures older (or newer) than this are refused, so a captured request cannot be replayed.
DEFAULT_TOLERANCE_S = 300


class WebhookSignatureError(ValueError):
    """The request is not a genuine, fresh webhook from the hub: answer 400, do not act on it."""


def verify_signature(
    body: bytes,
    header: str,
    secret: str | Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Return if ``header`` (the ``Natalia-Signature`` value) signs ``body`` with ``secret``.

    ``secret`` may be several secrets (while you rotate: the old and the new one); the header
    may carry several ``v1`` signatures (while the hub rotates). One match is enough. Raises
    :class:`WebhookSignatureError` when the header is malformed, its timestamp is more than
    ``tolerance_s`` from ``now`` (default: this machine's clock), or no signature matches.
    """
    timestamp, signatures = _parse_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookSignatureError(
            f"the signature's timestamp is {abs(current - timestamp):.0f} s from this "
            f"machine's clock (more than {tolerance_s:g} s): a replay, or a clock to set right"
        )
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(secrets):
        raise WebhookSignatureError("no webhook secret to verify with: pass the whsec_... secret")
    signed = str(timestamp).encode("ascii") + b"." + body
    expected = [
        hmac.new(key.encode("utf-8"), signed, hashlib.sha256).hexdigest().encode("ascii")
        for key in secrets
    ]
    matched = False
    for candidate in signatures:  # every comparison runs: no early exit to time
        for digest in expected:
            matched |= hmac.compare_digest(candidate, digest)
    if not matched:
        raise WebhookSignatureError(
            "the signature does not match: wrong secret, or the body was changed "
            "(verify the raw bytes received, not re-encoded JSON)"
        )


def parse_event(
    body: bytes,
    header: str,
    secret: str | Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> WebhookEvent:
    """The verified event; :class:`WebhookSignatureError` if the signature is not right."""
    verify_signature(body, header, secret, tolerance_s=tolerance_s, now=now)
    return WebhookEvent.model_validate_json(body)


def _parse_header(header: str) -> tuple[int, list[bytes]]:
    timestamp: int | None = None
    signatures: list[bytes] = []
    for part in header.split(","):
        key, separator, value = part.strip().partition("=")
        if not separator:
            continue
        if key == "t":
            if not value.isascii() or not value.isdigit() or timestamp is not None:
                raise WebhookSignatureError(f"{SIGNATURE_HEADER}: t must be one Unix time")
            timestamp = int(value)
        elif key == "v1" and value.isascii():
            signatures.append(value.lower().encode("ascii"))
    if timestamp is None:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} has no timestamp (t=...)")
    if not signatures:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} has no v1 signature")
    return timestamp, signatures
