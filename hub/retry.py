"""When a failed send is tried again: exponential backoff with equal jitter, per channel, until
``max_attempts`` (then the recipient's next channel) or the message's deadline; the last channel
is retried until the deadline; then dead letter.

Backoff after the n-th failed attempt on a channel::

    ceiling = min(backoff_cap_s, backoff_base_s * 2 ** (n - 1))
    delay   = ceiling / 2 + uniform(0, ceiling / 2)          # "equal jitter": [ceiling/2, ceiling]

Equal rather than full jitter: a failing server is never hit again at once (at least half the
backoff passes), while the retries of one outage (fifty recipients behind one SMS gateway) are
still spread out instead of arriving together.

An interrupted send (its hub stopped mid-way) is not a failure of the channel: it is sent again at
once and does not count against ``max_attempts`` (see ``RetryPolicy.after_interruption``).

The deadline is per message: it is set when the first channel is first claimed and the fallback
channels inherit it. A retry is never scheduled after it (the last try happens at the deadline),
and a failure at or after it gives the channel up. Each channel is still tried at least once —
a message is never dead-lettered without every channel having had its chance, even after an
outage of the hub itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from hub.config import DeliveryConfig

_random = random.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0
    deadline_s: float = 3600.0
    #: A ``sending`` row claimed longer ago than this belongs to a hub that stopped.
    lease_s: float = 30.0

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> RetryPolicy:
        """The policy of ``[delivery]``; the lease is twice the send timeout."""
        return cls(
            max_attempts=config.max_attempts,
            backoff_base_s=config.backoff_base_s,
            backoff_cap_s=config.backoff_cap_s,
            deadline_s=config.deadline_s,
            lease_s=2 * config.timeout_s,
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_s)

    def deadline_from(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.deadline_s)

    def ceiling(self, attempts: int) -> float:
        """The backoff before jitter after ``attempts`` failed attempts (``attempts`` >= 1)."""
        exponent = min(max(attempts, 1) - 1, 62)  # 2**62 s is past any cap
        return min(self.backoff_cap_s, self.backoff_base_s * 2.0**exponent)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts: in [ceiling/2, ceiling]."""
        ceiling = self.ceiling(attempts)
        return ceiling / 2 + _random.uniform(0, ceiling / 2)

    def after_failure(
        self,
        attempts: int,
        permanent: bool,
        now: datetime,
        deadline: datetime,
        last_channel: bool = False,
    ) -> Decision:
        """Retry this channel (when), or give it up (why), after its ``attempts``-th failure.

        ``max_attempts`` only decides when to move on to the next channel: the recipient's last
        channel is retried until the deadline (an outage of the only SMS gateway must not
        dead-letter every alarm after a few minutes).
        """
        if permanent:
            return Decision(None, "a retry cannot fix this failure")
        if attempts >= self.max_attempts and not last_channel:
            return Decision(None, f"gave up after {attempts} attempts")
        if now >= deadline:
            return Decision(None, f"gave up: the {self.deadline_s:g} s deadline passed")
        return Decision(min(now + timedelta(seconds=self.backoff(attempts)), deadline))

    def after_interruption(
        self, claims: int, now: datetime, deadline: datetime | None = None
    ) -> Decision:
        """A send cut off because its hub stopped (killed, restarted, lost power) mid-way.

        The hub failed, not the channel, and the outcome is unknown: it was no fair try. Before
        the message's ``deadline`` it is sent again at once and costs none of the channel's
        attempts, however often it happens (a hub restarted ten times in an hour must not
        dead-letter an alarm an hour from its deadline). After the deadline (or with none
        known) it is still sent again at once, until the channel has been claimed
        ``max_attempts`` times: so a send that keeps taking its hub down cannot restart it
        forever, and the message then ends as a dead letter that HQ is told about.
        """
        if deadline is not None and now < deadline:
            return Decision(now)
        if claims >= self.max_attempts:
            return Decision(
                None,
                f"gave up: the deadline passed and the channel was claimed {claims} times "
                "(the last send interrupted)",
            )
        return Decision(now)


@dataclass(frozen=True)
class Decision:
    """``retry_at`` set: try the same channel again then; else ``reason`` says why not."""

    retry_at: datetime | None
    reason: str = ""


__all__ = ["Decision", "RetryPolicy"]
