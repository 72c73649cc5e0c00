"""A real Mosquitto started with the project's own config, for tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker import HUB_USER, BrokerProcess, BrokerSettings, PasswordFile, free_port


def try_connect(host: str, port: int, username: str | None, password: str | None) -> int:
    """Connect once with MQTT 5; return the CONNACK reason code value (0 = accepted)."""
    result: list[int] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=username or "", protocol=mqtt.MQTTv5
    )
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
    try:
        client.connect(host, port)
    except OSError:
        return -1
    client.loop_start()
    deadline = time.monotonic() + 5
    while not result and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()
    return result[0] if result else -1


@dataclass
class RunningBroker:
    process: BrokerProcess
    hub_password: str

    @property
    def host(self) -> str:
        return self.process.host

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def accounts(self) -> PasswordFile:
        return PasswordFile(self.process.settings.password_file)

    def add_account(self, username: str, password: str | None = None) -> str:
        """Create an account, make the broker reload, and wait until it accepts the login."""
        password = password or f"pw-{username}"
        self.accounts.set(username, password)
        self.process.reload()
        deadline = time.monotonic() + 5
        while try_connect(self.host, self.port, username, password) != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"broker did not accept new account {username!r}")
            time.sleep(0.05)
        return password


def start_broker(
    data_dir: Path, port: int | None = None, *, retain_guard: bool = True
) -> RunningBroker:
    settings = BrokerSettings(
        data_dir=data_dir, port=port or free_port(), retain_guard=retain_guard
    )
    hub_password = "hub-test-password"
    PasswordFile(settings.password_file).set(HUB_USER, hub_password)
    return RunningBroker(BrokerProcess(settings).start(), hub_password)
