"""A site made the way an operator makes one (``natalia init``, CA, server certificate), with TLS.

``make_tls_site`` runs the real commands in-process; ``TlsSite.start_broker`` starts Mosquitto on
the rendered config with its plain, TLS (password) and certificate listeners on free ports, all
on loopback.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker import BrokerProcess, free_port
from broker.pki import Pki
from hub.cli import main
from hub.config import HubConfig, load_config
from hub.setup import broker_settings
from tests.support.receivers import wait_until


def natalia(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``natalia ARGS`` in this process; (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@dataclass
class TlsSite:
    directory: Path
    plain_port: int
    tls_port: int
    cert_port: int

    @property
    def config_path(self) -> Path:
        return self.directory / "hub.toml"

    @property
    def c(self) -> tuple[str, str]:
        """The ``-c hub.toml`` arguments of every command."""
        return ("-c", str(self.config_path))

    @property
    def config(self) -> HubConfig:
        return load_config(self.config_path)

    @property
    def data_dir(self) -> Path:
        return self.directory / "broker"

    @property
    def pki(self) -> Pki:
        return Pki(self.data_dir / "pki")

    def start_broker(self) -> BrokerProcess:
        settings = broker_settings(
            self.data_dir,
            self.plain_port,
            tls_port=self.tls_port,
            cert_port=self.cert_port,
            tls_bind_address="127.0.0.1",
        )
        process = BrokerProcess(settings).start()  # returns once the plain port listens
        wait_until(lambda: _listens(self.tls_port) and _listens(self.cert_port), 10)
        return process

    def hub_uses_tls(self, host: str = "localhost") -> None:
        """Make the hub connect to the TLS listener, as a hub on another machine would."""
        text = self.config_path.read_text()
        text = text.replace(
            f'host = "127.0.0.1"\nport = {self.plain_port}\n',
            f'host = "{host}"\nport = {self.plain_port}\ntls = true\n',
        )
        self.config_path.write_text(text)


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def make_tls_site(directory: Path, capsys: pytest.CaptureFixture[str]) -> TlsSite:
    """``natalia init`` + TLS listeners in hub.toml + CA + server certificate + one defender."""
    site = TlsSite(directory, free_port(), free_port(), free_port())
    code, _, err = natalia(
        capsys, "init", str(directory), "--port", str(site.plain_port), "--http-port", "1"
    )
    assert code == 0, err
    text = site.config_path.read_text()
    text = "load_entry_points = false\n" + text.replace(
        'data_dir = "broker"\n',
        f'data_dir = "broker"\ntls_port = {site.tls_port}\ncert_port = {site.cert_port}\n'
        'tls_bind_address = "127.0.0.1"\n',
    )
    text = text.replace("[http]\n", "[http]\nenabled = false\n", 1).replace("enabled = true\n", "")
    site.config_path.write_text(text)
    for command in (
        ("defender", "add", "Ana"),
        ("broker", "ca", "init"),
        ("broker", "cert", "server", "--host", "localhost", "--host", "127.0.0.1"),
    ):
        code, _, err = natalia(capsys, *command, *site.c)
        assert code == 0, (command, err)
    return site
