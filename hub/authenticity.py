"""Is a device message really from its device, and new? (PROTOCOL.md §5.5 and §5.3)

Three checks, in this order:

1. **Signature** (``open_payload``): HMAC-SHA256 with the device's key over the topic and the
   payload's bytes; an encrypted payload is opened with the same key. A device registered with
   ``encrypt`` must encrypt. A failure is *suspicious*: the message is kept and HQ is told.
2. **Sequence** (``admit_seq``): the hub keeps two high-water marks per device, one for alarms
   and cancels and one for locations and heartbeats (the device's counter is one, so each stream
   is strictly increasing, and a heartbeat overtaking a pending alarm cannot block the alarm).
   A number at or below its mark is a replay, unless it is a copy of a message already stored
   (the caller decides that first: an alarm id already stored, the cancel seq already applied).
3. **Clock** (``clock_skew``): a timestamp far from the hub's clock is accepted but flagged
   late; an alarm is never dropped for a wrong clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from devicekit.signing import SignatureError, decrypt, is_encrypted, parse_key, verify
from hub.models import Device

#: Channels whose messages are kept on the device until acked; the rest is telemetry.
ALARM_CHANNELS = ("alarm", "cancel")


class Suspicious(ValueError):
    """A message that is not provably new and from its device: kept and reported to HQ."""


@dataclass(frozen=True)
class DeviceKey:
    """What the ingest needs from the device row, read before the message is parsed."""

    device_id: str
    key: str | None
    encrypt: bool


def open_payload(device: DeviceKey, topic: str, payload: bytes) -> bytes:
    """The plain message bytes of a signed (and possibly encrypted) payload; raise Suspicious."""
    if device.key is None:
        raise Suspicious(
            f"device {device.device_id!r} has no key (revoked): nothing it sends counts"
        )
    key = parse_key(device.key)
    try:
        body = verify(key, topic, payload)
        if is_encrypted(body):
            return decrypt(key, topic, body)
    except SignatureError as exc:
        raise Suspicious(str(exc)) from None
    if device.encrypt:
        raise Suspicious(
            f"device {device.device_id!r} must encrypt its payloads; this one is clear"
        )
    return body


class SeqVerdict(enum.Enum):
    NEW = "new"  #: above the mark: accept, the mark moves up
    COPY = "copy"  #: exactly the mark on telemetry: a redelivery of what was accepted


def admit_seq(device: Device, channel: str, seq: int) -> SeqVerdict:
    """Check ``seq`` against the device's mark for ``channel`` and move the mark; raise if old.

    The caller has already answered copies of stored alarms and applied cancels, so what reaches
    here on the alarm channels must be new.
    """
    alarm_stream = channel in ALARM_CHANNELS
    mark = device.alarm_seq if alarm_stream else device.telemetry_seq
    if mark is not None and seq <= mark:
        if seq == mark and not alarm_stream:
            return SeqVerdict.COPY
        raise Suspicious(
            f"replayed or out-of-order {channel}: seq {seq} is not above {mark}, the last "
            "accepted; a device's seq never goes back (PROTOCOL.md 5.3)"
        )
    if alarm_stream:
        device.alarm_seq = seq
    else:
        device.telemetry_seq = seq
    return SeqVerdict.NEW


def clock_skew(device_ts: datetime, received_at: datetime, tolerance_s: float) -> float | None:
    """Seconds the device clock is ahead (+) or behind (-), if beyond ``tolerance_s``; else None."""
    skew = (device_ts - received_at).total_seconds()
    return round(skew, 3) if abs(skew) > tolerance_s else None
