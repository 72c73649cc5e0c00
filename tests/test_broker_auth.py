"""Who the shipped broker config refuses, on a real Mosquitto with TLS listeners.

Every refusal has a positive control: the same client, or the same kind of client, succeeds on
what it is allowed to do, so no test passes because everything fails.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session

from broker import HUB_USER, BrokerProcess, BrokerSettings, PasswordFile, free_port
from broker.pki import Pki
from devicekit.topics import topic
from hub.admin import add_defender, add_device, revoke_device, suspend_device
from hub.db import make_engine
from hub.models import Device

NOT_AUTHORIZED = 0x87
BAD_CREDENTIALS = 0x86
#: PUBACK "Success" or "No matching subscribers": both mean the broker accepted the message.
PUBLISHED = (0x00, 0x10)
HUB_PASSWORD = "hub-test-password"
DEVICE_PASSWORD = "pw"


@dataclass
class TlsBroker:
    process: BrokerProcess
    pki: Pki

    @property
    def settings(self) -> BrokerSettings:
        return self.process.settings

    @property
    def accounts(self) -> PasswordFile:
        return PasswordFile(self.settings.password_file)

    def add_device(
        self, device_id: str, password: str = DEVICE_PASSWORD, cert: bool = False
    ) -> None:
        self.accounts.set(device_id, password)
        if cert:
            self.pki.issue_device(device_id)
        self.reload()

    def reload(self) -> None:
        self.process.reload()
        time.sleep(0.3)  # Mosquitto handles the signal in its next loop iteration


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    settings = BrokerSettings(
        data_dir=tmp_path / "broker",
        port=free_port(),
        tls_port=free_port(),
        cert_port=free_port(),
        tls_bind_address="127.0.0.1",
    )
    pki = Pki(settings.pki_dir)
    pki.init_ca()
    pki.issue_server(["localhost", "127.0.0.1"])
    PasswordFile(settings.password_file).set(HUB_USER, HUB_PASSWORD)
    process = BrokerProcess(settings).start()
    _wait_for_port(settings.tls_port)
    _wait_for_port(settings.cert_port)
    try:
        yield TlsBroker(process, pki)
    finally:
        process.stop()


def _wait_for_port(port: int | None) -> None:
    import socket

    assert port is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


class Client:
    """One MQTT 5 client; records CONNACK, SUBACK and PUBACK reason codes and messages."""

    def __init__(
        self,
        broker: TlsBroker,
        username: str | None,
        password: str | None = DEVICE_PASSWORD,
        *,
        listener: str = "tls",
        client_id: str | None = None,
        cert: Pki | None = None,
        cert_name: str | None = None,
    ) -> None:
        settings = broker.settings
        port = {"plain": settings.port, "tls": settings.tls_port, "cert": settings.cert_port}
        self.port = port[listener]
        assert self.port is not None
        self.connack: int | None = None
        self.tls_error: str | None = None
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self.granted: list[int] = []
        self.pubacks: dict[int, int] = {}
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id if client_id is not None else (username or ""),
            protocol=mqtt.MQTTv5,
        )
        self.client.reconnect_delay_set(60, 60)  # a refused client must not come back by itself
        if username is not None:
            self.client.username_pw_set(username, password)
        if listener != "plain":
            name = cert_name or username or ""
            self.client.tls_set(
                ca_certs=str(broker.pki.ca_cert),
                certfile=str(cert.device_cert(name)) if cert else None,
                keyfile=str(cert.device_key(name)) if cert else None,
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        try:
            self.client.connect("127.0.0.1", self.port)
        except (ssl.SSLError, OSError) as exc:
            self.tls_error = repr(exc)
            return
        self.client.loop_start()
        self._connected.wait(5)

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason, props) -> None:
        self.connack = reason.value
        self._connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata, mid, reasons, props) -> None:
        self.granted = [r.value for r in reasons]
        self._subscribed.set()

    def _on_publish(self, client: mqtt.Client, userdata, mid, reason, props) -> None:
        self.pubacks[mid] = reason.value

    @property
    def accepted(self) -> bool:
        return self.connack == 0

    def subscribe(self, *topics: str) -> list[int]:
        self._subscribed.clear()
        self.client.subscribe([(t, 1) for t in topics])
        assert self._subscribed.wait(5)
        return self.granted

    def publish(self, topic_name: str, payload: bytes = b"{}") -> int:
        """QoS 1; the PUBACK reason code (0 = success, 0x87 = not authorized)."""
        info = self.client.publish(topic_name, payload, qos=1)
        info.wait_for_publish(timeout=5)
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def refused(client: Client) -> bool:
    """The broker refused the connection: a CONNACK error, or the TLS handshake failed."""
    try:
        return client.connack != 0 or client.tls_error is not None
    finally:
        client.close()


# -- the rendered config ---------------------------------------------------------------------


def test_tls_config_binds_plain_listener_to_loopback(tls_broker: TlsBroker) -> None:
    conf = tls_broker.settings.config_file.read_text()
    settings = tls_broker.settings
    assert f"listener {settings.port} 127.0.0.1\n" in conf
    assert f"listener {settings.tls_port} 127.0.0.1\n" in conf
    assert conf.count("tls_version tlsv1.2") == 2
    assert conf.count("crlfile ") == 2
    assert "require_certificate true" in conf and "require_certificate false" in conf
    assert "allow_anonymous false" in conf and "per_listener_settings false" in conf
    for key in (tls_broker.pki.ca_key, tls_broker.pki.server_key):
        assert key.stat().st_mode & 0o777 == 0o600


def test_without_tls_the_plain_listener_keeps_its_address(tmp_path: Path) -> None:
    from broker.config import render

    settings = BrokerSettings(data_dir=tmp_path / "b", port=18831, bind_address="0.0.0.0")
    conf = render(settings).read_text()
    assert "listener 18831 0.0.0.0\n" in conf
    assert "cafile" not in conf


def test_tls_without_certificates_is_refused_with_a_hint(tmp_path: Path) -> None:
    from broker.config import BrokerConfigError, render

    with pytest.raises(BrokerConfigError, match="natalia broker ca init"):
        render(BrokerSettings(data_dir=tmp_path / "b", tls_port=8883))


# -- the matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["plain", "tls"])
def test_anonymous_is_refused(tls_broker: TlsBroker, listener: str) -> None:
    tls_broker.add_device("wb-1")
    assert refused(Client(tls_broker, None, None, listener=listener, client_id="anon"))
    control = Client(tls_broker, "wb-1", listener=listener)
    assert control.accepted
    control.close()


def test_wrong_password_is_refused(tls_broker: TlsBroker) -> None:
    tls_broker.add_device("wb-1", "right")
    wrong = Client(tls_broker, "wb-1", "wrong")
    assert wrong.connack == BAD_CREDENTIALS or wrong.connack == NOT_AUTHORIZED
    wrong.close()
    control = Client(tls_broker, "wb-1", "right")
    assert control.accepted
    control.close()


def test_client_certificate_from_another_ca_is_refused(tls_broker: TlsBroker, tmp_path) -> None:
    tls_broker.add_device("wb-1", cert=True)
    rogue = Pki(tmp_path / "rogue")
    rogue.init_ca()
    rogue.issue_device("wb-1")  # same CN, same password, wrong CA
    assert refused(Client(tls_broker, "wb-1", listener="cert", cert=rogue))
    assert refused(Client(tls_broker, "wb-1", listener="cert"))  # no certificate at all
    assert refused(Client(tls_broker, "wb-1", "wrong", listener="cert", cert=tls_broker.pki))
    control = Client(tls_broker, "wb-1", listener="cert", cert=tls_broker.pki)
    assert control.accepted
    assert control.publish(topic("wb-1", "alarm")) in PUBLISHED
    control.close()


def test_revoked_device_is_refused_and_disconnected(tls_broker: TlsBroker, tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'natalia.db'}")
    defender = add_defender(engine, "Ana")
    assert defender.id is not None
    data_dir = tls_broker.settings.data_dir
    for device_id in ("wb-1", "wb-2"):
        add_device(engine, device_id, defender.id, data_dir, password="pw")
        tls_broker.pki.issue_device(device_id)
    tls_broker.reload()
    seized = Client(tls_broker, "wb-1", listener="cert", cert=tls_broker.pki)
    assert seized.accepted

    done = revoke_device(engine, "wb-1", data_dir)
    assert done.account_removed and done.broker_reloaded
    assert done.certificate_serial == tls_broker.pki.device_serial("wb-1")
    # Mosquitto re-checks connected clients on SIGHUP: the seized wristband is pushed off.
    assert seized.disconnected.wait(5)
    seized.close()
    with Session(engine) as session:
        device = session.get(Device, "wb-1")
        assert device is not None and not device.active
    assert refused(Client(tls_broker, "wb-1", listener="cert", cert=tls_broker.pki))
    assert refused(Client(tls_broker, "wb-1", listener="tls"))
    # Even with its password put back, the revoked certificate is refused (CRL).
    tls_broker.accounts.set("wb-1", "pw")
    tls_broker.reload()
    assert refused(Client(tls_broker, "wb-1", listener="cert", cert=tls_broker.pki))

    control = Client(tls_broker, "wb-2", listener="cert", cert=tls_broker.pki)
    assert control.accepted
    control.close()


def test_suspended_device_is_disconnected_and_its_certificate_held(
    tls_broker: TlsBroker, tmp_path
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'natalia.db'}")
    defender = add_defender(engine, "Ana")
    assert defender.id is not None
    data_dir = tls_broker.settings.data_dir
    add_device(engine, "wb-1", defender.id, data_dir, password="pw")
    add_device(engine, "wb-2", defender.id, data_dir, password="pw")
    tls_broker.pki.issue_device("wb-1")
    tls_broker.reload()
    connected = Client(tls_broker, "wb-1")
    bystander = Client(tls_broker, "wb-2")
    assert connected.accepted and bystander.accepted

    done = suspend_device(engine, "wb-1", data_dir)
    assert done.account_removed and done.certificate_serial is not None
    assert connected.disconnected.wait(5)
    connected.close()
    assert [r.reason for r in tls_broker.pki.revocations()] == ["suspended"]
    assert refused(Client(tls_broker, "wb-1"))
    assert bystander.publish(topic("wb-2", "heartbeat")) in PUBLISHED  # others are untouched
    assert not bystander.disconnected.is_set()
    bystander.close()


def test_device_cannot_publish_to_another_devices_topic(tls_broker: TlsBroker) -> None:
    tls_broker.add_device("wb-1")
    tls_broker.add_device("wb-2")
    hub = Client(tls_broker, HUB_USER, HUB_PASSWORD, listener="plain")
    assert hub.subscribe("natalia/v1/devices/+/alarm") == [1]
    device = Client(tls_broker, "wb-1")
    try:
        assert device.publish(topic("wb-2", "alarm"), b"forged") == NOT_AUTHORIZED
        assert device.publish(topic("wb-1", "alarm"), b"own") in PUBLISHED  # control
        assert wait_for(lambda: hub.messages)
        time.sleep(0.2)
        assert hub.messages == [(topic("wb-1", "alarm"), b"own")]
    finally:
        device.close()
        hub.close()


@pytest.mark.parametrize("username", ["wb+1", "wb#", "+", "#", "wb-1/#"])
def test_usernames_with_wildcards_are_refused(tls_broker: TlsBroker, username: str) -> None:
    tls_broker.add_device("wb-1")
    with pytest.raises(ValueError, match="invalid device id"):
        tls_broker.accounts.set(username, "pw")  # such an account cannot even be created
    assert refused(Client(tls_broker, username, "pw", client_id="x"))
    control = Client(tls_broker, "wb-1")
    assert control.accepted
    control.close()


@pytest.mark.parametrize("client_id", ["wb+1", "#", "natalia-hub", "wb-2/#"])
def test_client_id_is_replaced_by_the_username(tls_broker: TlsBroker, client_id: str) -> None:
    """``use_username_as_clientid``: a wildcard or borrowed client id never reaches the broker."""
    tls_broker.add_device("wb-1")
    tls_broker.add_device("wb-2")
    hub = Client(tls_broker, HUB_USER, HUB_PASSWORD, listener="plain")
    hub.subscribe("natalia/v1/devices/+/alarm")
    device = Client(tls_broker, "wb-1", client_id=client_id)
    try:
        assert device.accepted
        assert device.publish(topic("wb-2", "alarm")) == NOT_AUTHORIZED
        assert device.publish(topic("wb-1", "alarm")) in PUBLISHED
        assert wait_for(lambda: hub.messages)
        assert [t for t, _ in hub.messages] == [topic("wb-1", "alarm")]
        assert not hub.disconnected.is_set()  # "natalia-hub" as client id did not push it off
        log = tls_broker.process.log_tail(50)
        assert "as wb-1 (p5, c1, k60, u'wb-1')" in log
        assert f"as {client_id} (p5, c1, k60, u'wb-1')" not in log
    finally:
        device.close()
        hub.close()


@pytest.mark.parametrize("pattern", ["natalia/#", "$SYS/#", "$CONTROL/#", "#", "+/+/+/+/+"])
def test_device_cannot_subscribe_beyond_its_own_topics(tls_broker: TlsBroker, pattern: str) -> None:
    tls_broker.add_device("wb-1")
    tls_broker.add_device("wb-2")
    spy = Client(tls_broker, "wb-1")
    hub = Client(tls_broker, HUB_USER, HUB_PASSWORD, listener="plain")
    other = Client(tls_broker, "wb-2")
    try:
        # Mosquitto 2.0 grants a wildcard subscription (SUBACK QoS 1, not 0x87) and applies
        # the ACL to every message it would deliver: nothing outside the device's own topics
        # arrives.
        assert spy.subscribe(pattern) in ([1], [NOT_AUTHORIZED])
        assert spy.subscribe(topic("wb-1", "ack")) == [1]  # control
        assert other.publish(topic("wb-2", "alarm")) in PUBLISHED
        assert other.publish(topic("wb-2", "status")) in PUBLISHED
        assert hub.publish(topic("wb-2", "ack")) in PUBLISHED
        assert hub.publish(topic("wb-2", "cmd")) in PUBLISHED
        assert hub.publish(topic("wb-1", "ack")) in PUBLISHED
        assert wait_for(lambda: spy.messages)
        time.sleep(0.3)
        assert {t for t, _ in spy.messages} == {topic("wb-1", "ack")}
    finally:
        for client in (spy, hub, other):
            client.close()
