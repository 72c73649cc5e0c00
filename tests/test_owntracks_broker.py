"""Responders' OwnTracks apps on the shipped broker config: real Mosquitto, real MQTT clients.

A responder's phone writes only ``owntracks/<its username>/<device>`` and reads nothing; the hub
reads every responder's location; wristbands cannot write a responder's topic.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.engine import Engine

from broker import HUB_USER
from hub.db import make_engine
from hub.owntracks import SUBSCRIPTION, parse_owntracks
from hub.responders import add_responder_with_account, list_responders, record_position
from tests.support.brokers import RunningBroker
from tests.support.device import RawDevice
from tests.support.receivers import wait_until


def android_location(tst: int | None = None, lat: float = 59.3426) -> bytes:
    """A location as the Android app publishes it (booklet "JSON", _type=location)."""
    return json.dumps(
        {
            "_type": "location",
            "acc": 14,
            "batt": 77,
            "bs": 1,
            "conn": "m",
            "created_at": int(time.time()),
            "lat": lat,
            "lon": 18.0649,
            "m": 1,
            "t": "u",
            "tid": "an",
            "tst": tst or int(time.time()),
        }
    ).encode()


class MessageLog:
    """An MQTT client that keeps every message it reads; ``sync()`` is an ordering barrier."""

    def __init__(self, broker: RunningBroker, username: str, password: str, *topics: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subacks: list[int] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, reasons, props: self._subacks.append(mid)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._subscribe([(topic, 1) for topic in topics])

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def _subscribe(self, topics: list[tuple[str, int]]) -> None:
        _, mid = self.client.subscribe(topics)
        wait_until(lambda: mid in self._subacks, timeout=5)

    def sync(self) -> None:
        """Return once everything the broker routed to us before now has been read.

        Mosquitto is single-threaded and writes a client's packets in order, so a SUBACK
        requested now arrives after any PUBLISH it queued for us earlier.
        """
        self._subscribe([("natalia-test/barrier", 0)])

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class OwnTracksApp:
    """A phone running OwnTracks in MQTT mode: its login, its client id, its last will."""

    def __init__(
        self,
        broker: RunningBroker,
        username: str,
        password: str,
        device: str = "phone",
        protocol: MQTTProtocolVersion = mqtt.MQTTv311,
    ) -> None:
        self.base = f"owntracks/{username}/{device}"
        self.protocol = protocol
        self.reasons: dict[int, str] = {}
        self._lock = threading.Lock()
        # The app's default client id is "<user><device>"; the broker forces the username.
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{username}{device}", protocol=protocol
        )
        self.client.username_pw_set(username, password)
        self.client.will_set(self.base, json.dumps({"_type": "lwt", "tst": int(time.time())}), 1)
        self.client.on_publish = self._on_publish
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: connected.set() if rc == 0 else None
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(5), "the app's login (with its last will) was refused"

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        with self._lock:
            self.reasons[mid] = str(reason)

    def publish(self, topic: str, payload: bytes) -> str:
        """Publish at QoS 1 (the app's default) and return the PUBACK reason."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=5)
        with self._lock:
            return self.reasons[info.mid]

    def vanish(self) -> None:
        """Drop off as a phone does when it loses the network: the broker sends the will."""
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        self.client.loop_stop()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'natalia.db'}")


@pytest.fixture
def responders(broker: RunningBroker, engine: Engine) -> dict[str, str]:
    """Ana and Boris, registered like `natalia responder add --mqtt-user`; name -> password."""
    passwords = {}
    for user in ("ana", "boris"):
        creds = add_responder_with_account(
            engine, user.title(), "console://", 5000, user, broker.process.settings.data_dir
        )
        passwords[user] = broker.add_account(user, creds.password)  # reload and wait for login
    return passwords


@pytest.fixture
def hub(broker: RunningBroker) -> Iterator[MessageLog]:
    log = MessageLog(broker, HUB_USER, broker.hub_password, SUBSCRIPTION)
    yield log
    log.close()


def store_all(engine: Engine, messages: list[tuple[str, bytes]]) -> list[object]:
    """What the hub does with each message: parse it, then store a location."""
    results: list[object] = []
    for topic, payload in messages:
        location = parse_owntracks(topic, payload)
        results.append(
            None if location is None else record_position(engine, location.user, location)
        )
    return results


def test_app_location_reaches_the_hub_and_is_stored(
    broker: RunningBroker, engine: Engine, responders: dict[str, str], hub: MessageLog
) -> None:
    app = OwnTracksApp(broker, "ana", responders["ana"])  # MQTT 3.1.1, like the Android app
    try:
        tst = int(time.time()) - 5
        assert app.publish("owntracks/ana/phone", android_location(tst)) == "Success"
        received = wait_until(hub.received, timeout=5)
    finally:
        app.close()
    assert [topic for topic, _ in received] == ["owntracks/ana/phone"]
    [stored] = store_all(engine, received)
    ana = next(r for r in list_responders(engine) if r.mqtt_user == "ana")
    assert stored is not None
    assert (ana.lat, ana.lon, ana.accuracy_m) == (59.3426, 18.0649, 14)
    assert ana.position_at is not None and int(ana.position_at.timestamp()) == tst


def test_responder_cannot_publish_for_another_responder_or_a_wristband(
    broker: RunningBroker, responders: dict[str, str], hub: MessageLog
) -> None:
    broker.add_account("wb-1")
    app = OwnTracksApp(broker, "ana", responders["ana"], protocol=mqtt.MQTTv5)
    try:
        assert app.publish("owntracks/boris/phone", android_location()) == "Not authorized"
        assert app.publish("natalia/v1/devices/wb-1/alarm", b"{}") == "Not authorized"
        assert app.publish("natalia/v1/devices/wb-1/location", b"{}") == "Not authorized"
        assert app.publish("owntracks/ana/phone/event", b"{}") == "Not authorized"
        assert app.publish("owntracks/ana/phone", android_location()) == "Success"
        wait_until(hub.received, timeout=5)
        hub.sync()
    finally:
        app.close()
    assert [topic for topic, _ in hub.received()] == ["owntracks/ana/phone"]


def test_refused_publish_of_an_mqtt311_app_never_reaches_the_hub(
    broker: RunningBroker, responders: dict[str, str], hub: MessageLog
) -> None:
    # MQTT 3.1.1 has no PUBACK reason codes: the broker drops the message silently.
    app = OwnTracksApp(broker, "ana", responders["ana"])
    try:
        app.publish("owntracks/boris/phone", android_location(lat=1.0))
        app.publish("owntracks/ana/phone", android_location(lat=2.0))
        # One publisher's messages arrive in order, so Boris's would have come first.
        received = wait_until(hub.received, timeout=5)
    finally:
        app.close()
    assert [topic for topic, _ in received] == ["owntracks/ana/phone"]


def test_responder_reads_no_ones_position(
    broker: RunningBroker, responders: dict[str, str], hub: MessageLog
) -> None:
    spy = MessageLog(broker, "boris", responders["boris"], "#", SUBSCRIPTION, "owntracks/ana/#")
    app = OwnTracksApp(broker, "ana", responders["ana"])
    try:
        assert app.publish("owntracks/ana/phone", android_location()) == "Success"
        wait_until(hub.received, timeout=5)
        spy.sync()
        assert spy.received() == []
    finally:
        app.close()
        spy.close()


def test_wristband_cannot_write_a_responders_position(
    broker: RunningBroker, engine: Engine, responders: dict[str, str], hub: MessageLog
) -> None:
    password = broker.add_account("wb-1")
    device = RawDevice(broker.host, broker.port, "wb-1", password)
    try:
        info = device.client.publish("owntracks/ana/phone", android_location(), qos=1)
        info.wait_for_publish(5)
        assert device.puback_reasons[info.mid] == "Not authorized"
        # Its own name's topic is open to it by the shared pattern, but no responder has that
        # name, so the hub stores nothing (the caller keeps the message as refused).
        info = device.client.publish("owntracks/wb-1/phone", android_location(), qos=1)
        info.wait_for_publish(5)
        # One publisher's messages arrive in order: a copy on Ana's topic would come first.
        received = wait_until(hub.received, timeout=5)
    finally:
        device.close()
    assert [topic for topic, _ in received] == ["owntracks/wb-1/phone"]
    assert store_all(engine, received) == [None]
    assert all(r.position_at is None for r in list_responders(engine))


def test_app_last_will_reaches_the_hub_and_is_not_a_position(
    broker: RunningBroker, engine: Engine, responders: dict[str, str], hub: MessageLog
) -> None:
    app = OwnTracksApp(broker, "ana", responders["ana"], protocol=mqtt.MQTTv5)
    app.vanish()
    received = wait_until(hub.received, timeout=5)
    assert [topic for topic, _ in received] == ["owntracks/ana/phone"]
    assert json.loads(received[0][1])["_type"] == "lwt"
    assert store_all(engine, received) == [None]
