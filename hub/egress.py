"""Where the hub may connect on someone else's behalf: never to internal addresses.

A channel URL (a contact's, a responder's, an event registration's) and a webhook URL make the
hub connect wherever they point. Pointed at 127.0.0.1, a private network, a link-local address
(a cloud's metadata service at 169.254.169.254) or the hub's own web server, they would let
whoever set the URL reach what only the hub's machine can reach. So:

- at creation, a URL whose host is such an address (an IP literal, ``localhost``) is refused,
  and a webhook's host is resolved and refused if any of its addresses is one;
- at send time, every connection a notifier plugin or the webhook sender opens is checked on
  the address it actually connects to, after DNS resolution: a name that resolved to a public
  address when it was saved and to 127.0.0.1 now (DNS rebinding) is refused all the same.

The check sits on ``socket.socket.connect`` while a send runs (a context variable marks the
send), so it covers every library a plugin uses (Apprise's requests and smtplib, httpx) without
their cooperation, and nothing else the hub does. ``[security] allowed_networks`` lists the
internal networks an operator does allow (an internal mail relay; the tests' and the demo's
local receivers: ``["127.0.0.0/8"]``). The hub's own HTTP listener is refused even then.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRefused(ConnectionRefusedError):
    """A connection to an internal address, refused; the message says what to configure."""


@dataclass(frozen=True)
class EgressPolicy:
    allowed: tuple[Network, ...] = ()
    #: The hub's own listeners (address, port): never a destination.
    own: frozenset[tuple[Address, int]] = field(default_factory=frozenset)

    @classmethod
    def from_settings(
        cls, allowed: Iterable[str], own: Iterable[tuple[str, int]] = ()
    ) -> EgressPolicy:
        networks = tuple(ipaddress.ip_network(text, strict=False) for text in allowed)
        listeners = frozenset(
            (address, port) for host, port in own for address in _addresses(host, port)
        )
        return cls(networks, listeners)

    def refusal(self, address: Address, port: int | None = None) -> str | None:
        """Why connecting to ``address`` is refused; None when it is allowed."""
        address = _unmapped(address)
        if port is not None and (address, port) in self.own:
            return f"{address}:{port} is this hub's own web server"
        if not _internal(address) or any(address in network for network in self.allowed):
            return None
        return (
            f"{address} is an internal address (loopback, private, link-local or reserved); "
            "allow its network in [security] allowed_networks if the hub must reach it"
        )


_ACTIVE: contextvars.ContextVar[EgressPolicy | None] = contextvars.ContextVar(
    "natalia_egress_policy", default=None
)
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


@contextlib.contextmanager
def guarded(policy: EgressPolicy | None) -> Iterator[None]:
    """Within this block (and threads started with a copy of its context), connections to
    addresses ``policy`` refuses fail with :class:`EgressRefused`. None: no check."""
    if policy is None:
        yield
        return
    _install()
    token = _ACTIVE.set(policy)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def check_url(url: str, policy: EgressPolicy, *, resolve: bool) -> None:
    """Refuse a URL whose host is an internal address (``resolve``: also a name that resolves
    to one). Raises :class:`EgressRefused`; a host that does not resolve is left to send time."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return  # the URL's own validation says what is wrong with it
    if not host:
        return
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        addresses = [ipaddress.ip_address("127.0.0.1")]
    else:
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = _addresses(host, port or 443) if resolve else []
    for address in addresses:
        reason = policy.refusal(address, port)
        if reason is not None:
            raise EgressRefused(f"the URL's host {host} is refused: {reason}")


def _install() -> None:
    """Put the check on ``socket.socket.connect`` once; it costs nothing outside a send."""
    if getattr(socket.socket.connect, "natalia_egress", False):
        return
    socket.socket.connect = _checked_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _checked_connect_ex  # type: ignore[method-assign,assignment]


def _check(sock: socket.socket, address: Any) -> None:
    policy = _ACTIVE.get()
    if policy is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
    except (ValueError, TypeError, IndexError):
        return  # not resolved yet: the resolved address comes through here again
    reason = policy.refusal(ip, int(address[1]))
    if reason is not None:
        raise EgressRefused(f"connection refused by the hub: {reason}")


def _checked_connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _original_connect(self, address)


def _checked_connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _original_connect_ex(self, address)


_checked_connect.natalia_egress = True  # type: ignore[attr-defined]


def _addresses(host: str, port: int) -> list[Address]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [_unmapped(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in found]


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _internal(address: Address) -> bool:
    return not address.is_global or address.is_multicast
