"""Is a device message really from its device, and new? (PROTOCOL.md §5.5 and §5.3)

Three checks, in this order:

1. **Signature** (``open_payload``): HMAC-SHA256 with the device's key over the topic and the
   payload's bytes; an encrypted payload is opened with the same key. A device registered with
   ``encrypt`` must encrypt. A failure is *suspicious*: the message is kept and HQ is told.
2. **Sequence** (``admit_seq``): an anti-replay window per device and stream, as DTLS and IPsec
   keep one: the highest ``seq`` accepted and which of the ``REPLAY_WINDOW`` numbers below it
   were seen. One stream for alarms and cancels, one for locations and heartbeats (the device's
   counter is one, so a heartbeat overtaking a pending alarm cannot push the alarm out of its
   window). The window only *classifies* a number (new, seen, below the window): MQTT
   redelivery, a reconnect, several messages in flight and shared subscriptions all reorder a
   device's messages, so what the hub does with each class is decided per channel by
   ``hub.store`` — an alarm with a new ``alarm_id`` is never refused for its ``seq``.
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


#: How many numbers below the highest ``seq`` of a stream the hub remembers. Mosquitto keeps up to
#: ``max_inflight_messages`` (100) messages in flight per client and re-sends them in any order
#: after a reconnect; a wristband re-sends every pending alarm. 1024 covers both many times over.
REPLAY_WINDOW = 1024
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
_WINDOW_BYTES = REPLAY_WINDOW // 8


class SeqVerdict(enum.Enum):
    NEW = "new"  #: never accepted (above the highest, or in the window and unseen): now marked
    SEEN = "seen"  #: accepted before on this stream: a redelivered copy, or a number reused
    BELOW = "below"  #: older than the window: the hub can no longer tell whether it was seen


@dataclass
class ReplayWindow:
    """The highest ``seq`` accepted on a stream, and bit ``i`` of ``seen`` set when
    ``highest - i`` was accepted too (bit 0 is ``highest`` itself)."""

    highest: int | None = None
    seen: int = 0

    @classmethod
    def load(cls, highest: int | None, bitmap: bytes | None) -> ReplayWindow:
        """The window stored on a device row. Without a highest number (a new key) it is empty,
        whatever bitmap is left: resetting the highest number is enough to start afresh."""
        if highest is None:
            return cls()
        seen = int.from_bytes(bitmap, "big") if bitmap else 1
        return cls(highest, (seen | 1) & _WINDOW_MASK)

    def dump(self) -> bytes:
        return self.seen.to_bytes(_WINDOW_BYTES, "big")

    def verdict(self, seq: int) -> SeqVerdict:
        if self.highest is None or seq > self.highest:
            return SeqVerdict.NEW
        behind = self.highest - seq
        if behind >= REPLAY_WINDOW:
            return SeqVerdict.BELOW
        return SeqVerdict.SEEN if self.seen >> behind & 1 else SeqVerdict.NEW

    def mark(self, seq: int) -> None:
        """Remember ``seq`` as accepted, sliding the window up when it is the highest so far."""
        if self.highest is None or seq > self.highest:
            shift = REPLAY_WINDOW if self.highest is None else seq - self.highest
            # A jump of a whole window or more forgets everything (and never shifts 2**53 bits).
            self.seen = (self.seen << shift | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.highest = seq
        elif self.highest - seq < REPLAY_WINDOW:
            self.seen |= 1 << (self.highest - seq)


@dataclass(frozen=True)
class SeqCheck:
    """What the window said about one message's ``seq``."""

    verdict: SeqVerdict
    newest: bool  #: the highest number of its stream so far: its state (battery...) is current


def stream_of(channel: str) -> str:
    """``alarm`` for alarms and cancels, ``telemetry`` for locations and heartbeats."""
    return "alarm" if channel in ALARM_CHANNELS else "telemetry"


def admit_seq(device: Device, channel: str, seq: int) -> SeqCheck:
    """Classify ``seq`` against the device's window for ``channel`` and mark it when new.

    Never raises: the caller decides what each verdict means for its channel (PROTOCOL.md 5.3).
    """
    alarm_stream = stream_of(channel) == "alarm"
    if alarm_stream:
        window = ReplayWindow.load(device.alarm_seq, device.alarm_seen)
    else:
        window = ReplayWindow.load(device.telemetry_seq, device.telemetry_seen)
    verdict = window.verdict(seq)
    if verdict is SeqVerdict.NEW:
        window.mark(seq)
        if alarm_stream:
            device.alarm_seq, device.alarm_seen = window.highest, window.dump()
        else:
            device.telemetry_seq, device.telemetry_seen = window.highest, window.dump()
    return SeqCheck(verdict, newest=verdict is SeqVerdict.NEW and seq == window.highest)


def clock_skew(device_ts: datetime, received_at: datetime, tolerance_s: float) -> float | None:
    """Seconds the device clock is ahead (+) or behind (-), if beyond ``tolerance_s``; else None."""
    skew = (device_ts - received_at).total_seconds()
    return round(skew, 3) if abs(skew) > tolerance_s else None
