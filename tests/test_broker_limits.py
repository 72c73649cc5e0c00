"""What one client can cost the shipped broker, on a real Mosquitto with the rendered config.

- A packet above ``max_packet_size`` (16 KiB payload + headers) ends the connection that sent
  it; nothing of it reaches a subscriber.
- An offline persistent session's queue stops at ``max_queued_bytes``: the broker's memory and
  its persistence file stay bounded whatever is published for it.
- Idle sockets that never send CONNECT (Mosquitto keeps them about 90 s) fill only their own
  listener's ``max_connections``: the hub's loopback listener and the other device listener
  still take connections, even under a low descriptor limit.
- Only a device's ``status`` is retained (the retain guard, broker/retain_guard.c): retained
  alarms, positions and OwnTracks locations are passed on but never kept, neither in the
  persistence file nor for the next subscriber, and a retained will outside ``status`` is
  refused.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker import HUB_USER, BrokerProcess, BrokerSettings, PasswordFile, free_port
from broker.pki import Pki
from devicekit.topics import topic
from tests.support.brokers import RunningBroker
from tests.support.receivers import wait_until

HUB_PASSWORD = "hub-test-password"


class Mqtt5:
    """A paho MQTT 5 client that records what it gets; connects at once (clean start)."""

    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        *,
        clean_start: bool = True,
        session_expiry: int = 0,
        will: tuple[str, bytes, bool] | None = None,
        tls_ca: Path | None = None,
        start: bool = True,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.connack: int | None = None
        self.gone = threading.Event()
        self._connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(60, 60)
        self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=will[2])
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.gone.set()
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self._properties = Properties(PacketTypes.CONNECT)
        self._properties.SessionExpiryInterval = session_expiry
        self._clean_start = clean_start
        self.port = port
        if start:
            self.connect()

    def connect(self) -> Mqtt5:
        self.client.connect(
            "127.0.0.1", self.port, clean_start=self._clean_start, properties=self._properties
        )
        self.client.loop_start()
        assert self._connected.wait(5), "no CONNACK"
        return self

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason, props) -> None:
        self.connack = reason.value
        self.max_packet_size = getattr(props, "MaximumPacketSize", None)
        self._connected.set()

    def subscribe(self, *topics: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe([(name, 1) for name in topics])
        assert done.wait(5), "no SUBACK"

    def publish(self, name: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(name, payload, qos=1, retain=retain).wait_for_publish(timeout=10)

    def cut(self) -> None:
        """Drop the connection without DISCONNECT, as a dead battery would: the will is sent."""
        self.client.loop_stop()
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_now(broker: RunningBroker, *subscriptions: str) -> list[str]:
    """Topics the broker hands a new subscription as retained (the hub's account reads all)."""
    reader = Mqtt5(broker.port, HUB_USER, broker.hub_password)
    try:
        reader.subscribe(*subscriptions)
        time.sleep(0.5)  # retained messages are sent right after the SUBACK
        return sorted(m.topic for m in reader.messages if m.retain)
    finally:
        reader.close()


# -- packet size --------------------------------------------------------------------------------


def test_broker_refuses_a_250_kb_publish_and_ends_that_connection(
    broker: RunningBroker,
) -> None:
    password = broker.add_account("ana")
    hub = Mqtt5(broker.port, HUB_USER, broker.hub_password)
    hub.subscribe("owntracks/+/+")
    phone = Mqtt5(broker.port, "ana", password)
    assert phone.max_packet_size == 16 * 1024 + 1024  # told to every client in its CONNACK
    phone.publish("owntracks/ana/phone", b'{"_type":"location"}')
    wait_until(lambda: len(hub.messages) == 1)
    phone.client.publish("owntracks/ana/phone", b"x" * 250_000, qos=1)
    assert phone.gone.wait(10), "the broker kept a client that sent a 250 KB packet"
    time.sleep(0.3)
    assert len(hub.messages) == 1  # nothing of it reached the hub
    hub.close()
    phone.client.loop_stop()


# -- queued bytes -------------------------------------------------------------------------------


def test_offline_persistent_session_queues_no_more_than_its_bytes_bound(tmp_path: Path) -> None:
    bound = 256 * 1024
    settings = BrokerSettings(
        data_dir=tmp_path / "broker",
        port=free_port(),
        max_queued_bytes=bound,
        max_inflight_messages=10,
    )
    PasswordFile(settings.password_file).set(HUB_USER, HUB_PASSWORD)
    PasswordFile(settings.password_file).set("ana", "pw")
    with BrokerProcess(settings) as broker:
        hub = Mqtt5(broker.port, HUB_USER, HUB_PASSWORD, clean_start=False, session_expiry=3600)
        hub.subscribe("owntracks/+/+")
        hub.close()  # away: the broker queues for its session
        phone = Mqtt5(broker.port, "ana", "pw")
        for _ in range(100):  # 1.6 MB for a session that may hold 256 KiB
            phone.publish("owntracks/ana/phone", b"x" * 16_000)
        phone.close()
    size = (settings.data_dir / "mosquitto.db").stat().st_size  # written on exit
    assert size < bound + 10 * 16_000 + 64 * 1024, size
    with BrokerProcess(settings) as broker:
        hub = Mqtt5(broker.port, HUB_USER, HUB_PASSWORD, clean_start=False, session_expiry=3600)
        time.sleep(1.0)
        received = len(hub.messages)
        hub.close()
    assert 0 < received <= bound // 16_000 + 10 + 1, received


# -- connections --------------------------------------------------------------------------------


def test_idle_sockets_fill_only_their_listener_the_hub_and_a_device_still_connect(
    tmp_path: Path,
) -> None:
    settings = BrokerSettings(
        data_dir=tmp_path / "broker",
        port=free_port(),
        tls_port=free_port(),
        cert_port=free_port(),
        tls_bind_address="127.0.0.1",
        max_connections=20,
        local_max_connections=8,
    )
    pki = Pki(settings.pki_dir)
    pki.init_ca()
    pki.issue_server(["localhost", "127.0.0.1"])
    PasswordFile(settings.password_file).set(HUB_USER, HUB_PASSWORD)
    PasswordFile(settings.password_file).set("wb-1", "pw")
    # 100 descriptors in all: without max_connections, 150 idle sockets take every one.
    idle: list[socket.socket] = []
    with BrokerProcess(settings, file_limit=100) as broker:
        wait_until(lambda: _listens(settings.tls_port) and _listens(settings.cert_port))
        assert settings.tls_port is not None and settings.cert_port is not None
        try:
            for _ in range(150):  # never send CONNECT
                idle.append(socket.create_connection(("127.0.0.1", settings.cert_port)))
            time.sleep(0.5)
            held = sum(_still_open(sock) for sock in idle)
            assert held <= 20, f"the listener holds {held} idle sockets, over its limit"
            hub = Mqtt5(broker.port, HUB_USER, HUB_PASSWORD)
            assert hub.connack == 0
            device = Mqtt5(settings.tls_port, "wb-1", "pw", tls_ca=pki.ca_cert)
            assert device.connack == 0
            hub.close()
            device.close()
        finally:
            for sock in idle:
                sock.close()


def _listens(port: int | None) -> bool:
    assert port is not None
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _still_open(sock: socket.socket) -> bool:
    """False once the broker closed it (it refused the connection over max_connections)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


# -- retained messages --------------------------------------------------------------------------


def test_only_status_is_retained_not_alarms_positions_or_owntracks(
    broker: RunningBroker,
) -> None:
    device = Mqtt5(broker.port, "wb-1", broker.add_account("wb-1"))
    phone = Mqtt5(broker.port, "ana", broker.add_account("ana"))
    hub = Mqtt5(broker.port, HUB_USER, broker.hub_password)
    hub.subscribe("natalia/v1/devices/+/+", "owntracks/+/+")
    device.publish(topic("wb-1", "alarm"), b"ALARM-59.32932", retain=True)
    device.publish(topic("wb-1", "location"), b"LOCATION-18.06858", retain=True)
    phone.publish("owntracks/ana/phone", b"OWNTRACKS-59.3301", retain=True)  # the app's default
    device.publish(topic("wb-1", "status"), b"STATUS-online", retain=True)
    wait_until(lambda: len(hub.messages) == 4)  # every one was passed on
    hub.close()
    device.close()
    phone.close()
    assert retained_now(broker, "natalia/v1/devices/+/+", "owntracks/+/+") == [
        topic("wb-1", "status")
    ]
    broker.process.stop()  # writes the persistence file
    snapshot = (broker.process.settings.data_dir / "mosquitto.db").read_bytes()
    for marker in (b"ALARM-59.32932", b"LOCATION-18.06858", b"OWNTRACKS-59.3301"):
        assert marker not in snapshot, marker
    assert b"STATUS-online" in snapshot
    broker.process.start()
    assert retained_now(broker, "natalia/v1/devices/+/+", "owntracks/+/+") == [
        topic("wb-1", "status")
    ]


def test_a_retained_will_outside_status_is_refused_and_the_status_will_kept(
    broker: RunningBroker,
) -> None:
    hub = Mqtt5(broker.port, HUB_USER, broker.hub_password)
    hub.subscribe("natalia/v1/devices/+/+", "owntracks/+/+")
    wristband = Mqtt5(
        broker.port,
        "wb-1",
        broker.add_account("wb-1"),
        will=(topic("wb-1", "status"), b"STATUS-offline", True),
    )
    forger = Mqtt5(
        broker.port,
        "wb-2",
        broker.add_account("wb-2"),
        will=(topic("wb-2", "location"), b"LOCATION-WILL", True),
    )
    ana = broker.add_account("ana")
    # A session taken over (same account, clean start): its will is sent at once.
    phone = Mqtt5(broker.port, "ana", ana, will=("owntracks/ana/x1", b"OWNTRACKS-WILL", True))
    wristband.cut()
    forger.cut()
    phone_again = Mqtt5(broker.port, "ana", ana)
    wait_until(lambda: any(m.topic == topic("wb-1", "status") for m in hub.messages))
    time.sleep(0.3)
    hub.close()
    phone_again.close()
    phone.client.loop_stop()
    retained = retained_now(broker, "natalia/v1/devices/+/+", "owntracks/+/+")
    assert retained == [topic("wb-1", "status")]
    log = broker.process.log_tail(50)
    assert log.count("Denied retained will") == 2, log
