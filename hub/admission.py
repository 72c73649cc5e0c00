"""What one account may cost the hub: a fair rate for telemetry, and refusals in aggregate.

An *account* is the broker login a message came from. The broker's ACL makes the topic the
identity (broker/README.md): ``natalia/v1/devices/{id}/...`` is written only by account
``id``, ``owntracks/{user}/...`` only by account ``user``. So the hub can charge each message
to its account without trusting its content.

- Alarms and cancels are never limited: each is checked and stored, whatever else arrives.
- Telemetry (heartbeats, locations, status, responders' positions) gets a token bucket per
  account: ``account_burst`` messages at once, ``account_rate_per_s`` on average. Beyond it a
  message is refused for its rate, without touching the database.
- Refusals are aggregated per account: the first one after a quiet time is kept whole and
  reported to HQ at once; up to ``refusals_kept_whole`` in a flood are kept whole; the rest
  are counted with their reasons and sizes, and HQ gets one summary per account per
  ``refusal_interval_s`` ("device X: 950 messages refused in the last 60 s: ...").

Counted messages are acknowledged to the broker at once: their counts live in memory until
the interval ends, so a hub killed with ``kill -9`` loses at most one interval's counts of
junk. Nothing that is kept whole, and no alarm, is acknowledged before its commit.

Each message also gets its database lane (hub/database.py): alarms and cancels before
telemetry before refusals, fairly across accounts.
"""

from __future__ import annotations

import contextvars
import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from devicekit.topics import parse_topic
from hub.config import AdmissionConfig
from hub.lanes import Lane, Priority, current_lane

#: Device channels whose messages are never limited.
ALARM_CHANNELS = frozenset({"alarm", "cancel"})
#: The one channel whose messages may be retained by the broker.
RETAINED_CHANNEL = "status"
OWNTRACKS_PREFIX = "owntracks/"
_NUMBER = re.compile(r"\d+")
#: Set for the message being handled when the broker delivered it as a retained copy.
_replayed: contextvars.ContextVar[bool] = contextvars.ContextVar("replayed", default=False)
REPLAYED_REASON = (
    "a retained copy replayed by the broker: only status may be retained (the original was "
    "handled when it was published; turn retain off on the device or phone)"
)
#: Reasons named in a summary; the rest are counted as "other reasons".
_REASONS_NAMED = 3
#: Kinds of reason told apart in one window (a reason may name fields the sender chose, so
#: their number is the sender's to pick); the rest are counted together.
_REASON_KINDS = 20
_OTHER = "other reasons"


class Verdict(enum.Enum):
    """What to do with one refused message."""

    REPORT = "report"  #: keep it whole and report it to HQ now (the first after a quiet time)
    KEEP = "keep"  #: keep it whole; the interval's summary reports it
    COUNT = "count"  #: only count it (reason, size) for the interval's summary


@dataclass(frozen=True)
class Account:
    """Who sent a message, as the broker authenticated it (the topic's identity)."""

    kind: str  #: "device", "owntracks" or "unknown"
    name: str

    @property
    def label(self) -> str:
        return {"device": "device", "owntracks": "OwnTracks user"}.get(
            self.kind, "account"
        ) + f" {self.name}"

    @property
    def key(self) -> str:
        return self.name if self.kind == "device" else f"{self.kind}:{self.name}"


def account_of(topic: str) -> Account:
    """The account whose ACL lets it write ``topic``."""
    if topic.startswith(OWNTRACKS_PREFIX):
        return Account("owntracks", topic.split("/")[1] or "?")
    try:
        device_id, _ = parse_topic(topic)
    except ValueError:
        parts = topic.split("/")
        return Account("unknown", parts[3] if len(parts) > 3 and parts[3] else "?")
    return Account("device", device_id)


def channel_of(topic: str) -> str | None:
    try:
        return parse_topic(topic)[1]
    except ValueError:
        return None


def claimed_by(topic: str) -> tuple[str | None, str | None]:
    """(device id, channel) as a refusal records them: the topic's, or OwnTracks'."""
    if topic.startswith(OWNTRACKS_PREFIX):
        return None, "owntracks"
    try:
        return parse_topic(topic)
    except ValueError:
        return None, None


def may_be_retained(topic: str) -> bool:
    """Only a device's ``status`` may be retained (its last will says "offline")."""
    return channel_of(topic) == RETAINED_CHANNEL


def lane_of(topic: str) -> Lane:
    account = account_of(topic).key
    if channel_of(topic) in ALARM_CHANNELS:
        return Lane(Priority.ALARM, account)
    return Lane(Priority.TELEMETRY, account)


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


@dataclass
class _ReasonCount:
    example: str  #: the first reason of this kind, verbatim
    count: int = 0


@dataclass
class _Window:
    """One account's refusals in one interval."""

    started: float
    topic: str
    device_id: str | None
    channel: str | None
    reported: int = 0
    count: int = 0
    suspicious: int = 0
    total_bytes: int = 0
    largest: int = 0
    kept: list[int] = field(default_factory=list)
    reasons: dict[str, _ReasonCount] = field(default_factory=dict)


@dataclass
class _AccountState:
    window: _Window | None = None
    #: Until then a refusal is not reported at once: the last interval needed a summary.
    noisy_until: float = float("-inf")
    kept_in_flood: int = 0


@dataclass(frozen=True)
class RefusalSummary:
    """One account's refusals in one interval, for one report to HQ."""

    account: Account
    topic: str  #: the topic of the first refusal
    device_id: str | None
    channel: str | None
    count: int
    suspicious: int
    total_bytes: int
    largest: int
    seconds: float
    kept: tuple[int, ...]  #: ids of the refused messages kept whole
    reasons: tuple[tuple[str, int], ...]  #: (first reason of a kind, how many), most first

    @property
    def reason(self) -> str:
        """What HQ reads: counts, reasons and sizes; never a payload."""
        named = ", ".join(f"{reason} ({count})" for reason, count in self.reasons[:_REASONS_NAMED])
        others = sum(count for _, count in self.reasons[_REASONS_NAMED:])
        if others:
            named += f", {others} for other reasons"
        text = (
            f"{self.count} messages refused in the last {self.seconds:.0f} s: {named}; "
            f"{_size(self.total_bytes)} in all, the largest {_size(self.largest)}"
        )
        if self.suspicious:
            text += f"; {self.suspicious} SUSPICIOUS (possibly forged or replayed)"
        if self.kept:
            text += "; the first ones are kept as " + ", ".join(f"R{pk}" for pk in self.kept)
        return text


def _size(count: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


class Admission:
    """Per-account budgets and refusal windows of one hub process (event loop thread only)."""

    def __init__(
        self, config: AdmissionConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or AdmissionConfig()
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._accounts: dict[str, _AccountState] = {}

    @staticmethod
    def mark_replayed() -> None:
        """The message about to be handled is a retained copy the broker replayed."""
        _replayed.set(True)

    def enter(self, topic: str) -> str | None:
        """Start handling a message: set its database lane; a refusal reason when it is a
        replayed retained copy outside ``status`` or its account is over its telemetry rate,
        else None. Live alarms and cancels always pass."""
        lane = lane_of(topic)
        current_lane.set(lane)
        if _replayed.get():
            _replayed.set(False)
            if not may_be_retained(topic):
                return REPLAYED_REASON
        if lane.priority is Priority.ALARM:
            return None
        now = self._clock()
        bucket = self._buckets.get(lane.account)
        if bucket is None:
            bucket = TokenBucket(self.config.account_rate_per_s, self.config.account_burst, now)
            self._buckets[lane.account] = bucket
        if bucket.take(now):
            return None
        return (
            f"over this account's rate limit of {self.config.account_rate_per_s:g} messages/s "
            f"(bursts of {self.config.account_burst}); alarms and cancels are never limited"
        )

    def refusal(
        self,
        topic: str,
        device_id: str | None,
        channel: str | None,
        reason: str,
        size: int,
        suspicious: bool = False,
        keep_whole: bool = False,
    ) -> Verdict:
        """Count one refused message into its account's window; say what to do with it.
        ``keep_whole``: keep it whole even beyond ``refusals_kept_whole`` (an alarm or cancel
        the hub failed to handle may be a real one HQ must read); it is still reported in the
        summary. Sets the refusal database lane for what follows."""
        account = account_of(topic)
        current_lane.set(Lane(Priority.REFUSAL, account.key))
        now = self._clock()
        state = self._accounts.setdefault(account.key, _AccountState())
        window = state.window
        quiet = window is None and now >= state.noisy_until
        if window is None:
            if quiet:
                state.kept_in_flood = 0
            window = state.window = _Window(now, topic, device_id, channel)
        _count(window, reason, size, suspicious)
        if state.kept_in_flood >= self.config.refusals_kept_whole:
            return Verdict.KEEP if keep_whole else Verdict.COUNT
        state.kept_in_flood += 1
        if quiet:
            window.reported += 1
            return Verdict.REPORT
        return Verdict.KEEP

    def kept(self, topic: str, rejected_id: int) -> None:
        """Note that a refused message of ``topic``'s account was stored as ``rejected_id``."""
        state = self._accounts.get(account_of(topic).key)
        if state is not None and state.window is not None:
            state.window.kept.append(rejected_id)

    def close_due(self, everything: bool = False) -> list[RefusalSummary]:
        """End the windows whose interval is over (all with ``everything``, at shutdown); a
        summary for each that counted more than it reported at once. Forgets idle accounts."""
        now = self._clock()
        interval = self.config.refusal_interval_s
        summaries = []
        for key, state in list(self._accounts.items()):
            window = state.window
            if window is not None and (everything or now - window.started >= interval):
                state.window = None
                if window.count > window.reported:
                    state.noisy_until = now + interval
                    summaries.append(_summary(account_of(window.topic), window, now))
            elif window is None and now >= state.noisy_until:
                del self._accounts[key]  # quiet again: nothing to remember
        for key, bucket in list(self._buckets.items()):
            if bucket.full(now):
                del self._buckets[key]
        return summaries


def _count(window: _Window, reason: str, size: int, suspicious: bool) -> None:
    window.count += 1
    window.suspicious += suspicious
    window.total_bytes += size
    window.largest = max(window.largest, size)
    kind = _NUMBER.sub("#", reason)
    if kind not in window.reasons and len(window.reasons) >= _REASON_KINDS:
        kind = reason = _OTHER
    window.reasons.setdefault(kind, _ReasonCount(reason)).count += 1


def _summary(account: Account, window: _Window, now: float) -> RefusalSummary:
    reasons = sorted(window.reasons.values(), key=lambda item: -item.count)
    return RefusalSummary(
        account=account,
        topic=window.topic,
        device_id=window.device_id,
        channel=window.channel,
        count=window.count,
        suspicious=window.suspicious,
        total_bytes=window.total_bytes,
        largest=window.largest,
        seconds=max(now - window.started, 1.0),
        kept=tuple(window.kept),
        reasons=tuple((item.example, item.count) for item in reasons),
    )
