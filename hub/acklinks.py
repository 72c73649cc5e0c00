"""Acknowledgement links: which still work, and what their page may say.

Each message that asks for an acknowledgement carries a personal link (``/ack/{token}``; the
database keeps only the token's hash). Whoever holds the link — the recipient, or anyone who
reads their messages — can open it, so a link works only while it should:

- its recipient may still receive: a contact deactivated or deleted, or a responder taken off
  call, has dead links (``hub.recipients.recipient_stopped``);
- its recipient is not a press or public channel (they are never sent a link; one sent before
  that rule does not work either);
- its alarm has not been closed for longer than the grace period (``[http] ack_link_grace_s``):
  until then the page says the alarm is closed, after it the link is simply not valid.

"Closed" is as the link's holder may see it: after a duress code, a recipient who was sent the
"cancelled" message sees a cancelled alarm, closed when the code came, exactly as after a real
cancel; the link acknowledges nothing and expires like any cancelled alarm's
(``hub.disclosure``). Guessing tokens is rate-limited per client address (``hub.web``).
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, select

from hub.clock import Clock, stored_utc
from hub.codes import token_hash
from hub.disclosure import outside_view, sees_cancelled
from hub.models import CLOSED_STATES, PUBLIC_ROLES, Alarm, AlarmState, Delivery, Role
from hub.recipients import delivery_target_key, recipient_stopped


@dataclass(frozen=True)
class AckLink:
    """A link that still works: its delivery and alarm, and the state its holder may see."""

    delivery: Delivery
    alarm: Alarm
    state: AlarmState

    @property
    def closed(self) -> bool:
        return self.state in CLOSED_STATES

    @property
    def ref(self) -> str:
        return f"A{self.alarm.id}"


def find_link(session: Session, token: str, now: datetime, grace: timedelta) -> AckLink | None:
    """The link ``token`` opens, or None when it does not (or no longer) work."""
    delivery = session.exec(
        select(Delivery).where(Delivery.ack_token_hash == token_hash(token))
    ).first()
    if delivery is None or delivery.alarm_pk is None:
        return None
    if delivery.role in PUBLIC_ROLES or recipient_stopped(session, delivery) is not None:
        return None
    alarm = session.get(Alarm, delivery.alarm_pk)
    if alarm is None:
        return None
    role = Role(delivery.role)
    told = sees_cancelled(session, alarm, delivery_target_key(delivery), role)
    seen = outside_view(alarm) if told else alarm
    closed_at = stored_utc(seen.closed_at)
    if closed_at is not None and now - closed_at > grace:
        return None
    return AckLink(delivery, alarm, AlarmState(seen.state))


class GuessLimiter:
    """Links that did not work, counted per client address: an address that opened ``limit``
    of them within ``window`` is refused (HTTP 429) until the oldest leaves the window.

    A token has 144 random bits, so guessing one is hopeless anyway; this keeps a scanner from
    trying at volume and shows it in the hub's log. IPv6 addresses count per /64 (what one
    customer gets), so hopping through one's own network does not help. At most
    ``max_addresses`` are tracked (the oldest forgotten first), so a flood cannot fill memory.
    Behind a reverse proxy the address is the proxy's unless it sends ``X-Forwarded-For`` and
    its address is in uvicorn's ``forwarded_allow_ips`` (default 127.0.0.1).
    """

    def __init__(
        self, limit: int, window: timedelta, clock: Clock, max_addresses: int = 10_000
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_addresses = max_addresses
        self._misses: OrderedDict[str, deque[datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, address: str) -> float:
        """Seconds ``address`` must wait before it may open a link again (0: it may now)."""
        with self._lock:
            misses = self._recent(_network(address))
            if len(misses) < self.limit:
                return 0.0
            return max((misses[0] + self.window - self.clock.now()).total_seconds(), 1.0)

    def miss(self, address: str) -> None:
        """Count one link that did not work, opened from ``address``."""
        network = _network(address)
        with self._lock:
            misses = self._recent(network)
            misses.append(self.clock.now())
            self._misses[network] = misses
            self._misses.move_to_end(network)
            while len(self._misses) > self.max_addresses:
                self._misses.popitem(last=False)

    def _recent(self, network: str) -> deque[datetime]:
        misses = self._misses.get(network, deque())
        cutoff = self.clock.now() - self.window
        while misses and misses[0] <= cutoff:
            misses.popleft()
        return misses


def _network(address: str) -> str:
    """What one client is: its IPv4 address, or the /64 of its IPv6 address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a test client, a unix socket): counted as given
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


__all__ = ["AckLink", "GuessLimiter", "find_link"]
