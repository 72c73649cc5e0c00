"""Render the shipped Mosquitto config and ACL for one broker instance (port, data dir)."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path

from broker.plugin import PluginBuildError, install_retain_guard
from devicekit.protocol import MAX_PAYLOAD_BYTES
from devicekit.topics import validate_device_id

_HERE = Path(__file__).parent
HUB_USER = "natalia-hub"
#: Room in a packet besides the payload: fixed header, topic (``owntracks/`` and two names of
#: up to 64 characters is the longest one allowed), packet id and MQTT 5 properties.
PACKET_OVERHEAD = 1024
#: Descriptors the broker needs besides its clients: listening sockets, persistence, log,
#: password and ACL files, epoll, the plugin.
FILE_DESCRIPTOR_RESERVE = 64


@dataclass(frozen=True)
class BrokerSettings:
    """Everything that varies between broker instances; the rest is fixed in the template."""

    data_dir: Path
    port: int = 1883
    bind_address: str = "127.0.0.1"
    hub_user: str = HUB_USER
    autosave_interval: int = 5
    session_expiry: str = "14d"
    #: Per client, beyond its in-flight messages (broker/README.md, "Limits").
    max_queued_messages: int = 200_000
    max_queued_bytes: int = 128 * 1024 * 1024
    max_inflight_messages: int = 100
    max_packet_size: int = MAX_PAYLOAD_BYTES + PACKET_OVERHEAD
    #: Connections per listener facing devices and phones (each TLS listener, and the plain
    #: one while there is no TLS).
    max_connections: int = 1000
    #: Connections on the plain listener once it is loopback only (TLS on): the hub and tools.
    local_max_connections: int = 64
    #: Load the retain guard (only ``status`` retained). Off only to test what the hub does
    #: on a broker without it (another broker, or one an operator configured by hand).
    retain_guard: bool = True
    log_to_stdout: bool = False
    run_user: str = field(default_factory=getpass.getuser)
    #: MQTT over TLS, password login (devices' default). Needs the CA in ``pki/``.
    tls_port: int | None = None
    #: MQTT over TLS requiring a client certificate from our CA *and* the password.
    cert_port: int | None = None
    tls_bind_address: str = "0.0.0.0"  # noqa: S104 (the TLS listeners face the devices)

    @property
    def tls(self) -> bool:
        return self.tls_port is not None or self.cert_port is not None

    @property
    def plain_bind_address(self) -> str:
        """Where the plain listener binds: loopback only as soon as TLS is configured."""
        return "127.0.0.1" if self.tls else self.bind_address

    @property
    def plain_max_connections(self) -> int:
        """The plain listener's limit: the devices' one until TLS moves them elsewhere."""
        return self.local_max_connections if self.tls else self.max_connections

    @property
    def file_descriptors_needed(self) -> int:
        """What the broker's ``RLIMIT_NOFILE`` (systemd ``LimitNOFILE``) must allow: every
        listener full, plus the broker's own files."""
        tls_listeners = sum(port is not None for port in (self.tls_port, self.cert_port))
        clients = self.plain_max_connections + tls_listeners * self.max_connections
        return clients + FILE_DESCRIPTOR_RESERVE

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def acl_file(self) -> Path:
        return self.data_dir / "natalia.acl"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "passwd"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "mosquitto.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "mosquitto.pid"


class BrokerConfigError(ValueError):
    """The broker cannot be configured as asked (e.g. TLS without certificates)."""


def render(settings: BrokerSettings) -> Path:
    """Write ``mosquitto.conf``, the ACL and an (empty) password file; return the config path."""
    validate_device_id(settings.hub_user)
    for name in ("data_dir", "bind_address", "tls_bind_address", "session_expiry", "run_user"):
        if any(char in str(getattr(settings, name)) for char in "\r\n\x00"):
            raise BrokerConfigError(
                f"{name} must not hold a line break or NUL: it would add a line"
            )
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    retain_guard = ""
    if settings.retain_guard:
        try:
            retain_guard = f"plugin {install_retain_guard(data_dir)}"
        except PluginBuildError as exc:
            raise BrokerConfigError(str(exc)) from None
    values = {
        "port": settings.port,
        "bind_address": settings.plain_bind_address,
        "tls_listeners": _tls_listeners(settings),
        "data_dir": data_dir,
        "password_file": settings.password_file.resolve(),
        "acl_file": settings.acl_file.resolve(),
        "autosave_interval": settings.autosave_interval,
        "session_expiry": settings.session_expiry,
        "max_queued_messages": settings.max_queued_messages,
        "max_queued_bytes": settings.max_queued_bytes,
        "max_inflight_messages": settings.max_inflight_messages,
        "max_packet_size": settings.max_packet_size,
        "plain_max_connections": settings.plain_max_connections,
        "retain_guard": retain_guard,
        "log_dest": "stdout" if settings.log_to_stdout else f"file {settings.log_file.resolve()}",
        "run_user": settings.run_user,
        "hub_user": settings.hub_user,
    }
    _write_private(settings.config_file, (_HERE / "mosquitto.conf.in").read_text().format(**values))
    _write_private(settings.acl_file, (_HERE / "natalia.acl.in").read_text().format(**values))
    if not settings.password_file.exists():
        _write_private(settings.password_file, "")
    return settings.config_file


def _tls_listeners(settings: BrokerSettings) -> str:
    if not settings.tls:
        return ""
    pki = settings.pki_dir.resolve()
    files = {"ca.crt": "cafile", "server.crt": "certfile", "server.key": "keyfile"}
    files["crl.pem"] = "crlfile"
    missing = [name for name in files if not (pki / name).exists()]
    if missing:
        raise BrokerConfigError(
            f"TLS is configured but {', '.join(missing)} missing in {pki}: run "
            "`natalia broker ca init` and `natalia broker cert server --host NAME`"
        )
    template = (_HERE / "mosquitto.tls.conf.in").read_text()
    blocks = []
    for port, require in ((settings.tls_port, False), (settings.cert_port, True)):
        if port is None:
            continue
        blocks.append(
            template.format(
                port=port,
                bind_address=settings.tls_bind_address,
                max_connections=settings.max_connections,
                require_certificate="true" if require else "false",
                what="client certificate from the CA AND password"
                if require
                else "password (devices' default)",
                **{option: pki / name for name, option in files.items()},
            )
        )
    return "\n".join(blocks)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
