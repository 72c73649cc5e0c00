"""The shipped Mosquitto config, enforced by a real broker: who may connect, publish and read."""

from __future__ import annotations

import stat
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker import HUB_USER, BrokerProcess, BrokerSettings, PasswordFile, free_port
from broker.accounts import hash_password, verify_password
from tests.support.brokers import RunningBroker, try_connect
from tests.support.device import RawDevice, make_alarm

NOT_AUTHORIZED = 135


class Listener:
    """An MQTT client that records every message on the topics it subscribed to."""

    def __init__(self, broker: RunningBroker, username: str, password: str, *topics: str) -> None:
        self.messages: list[str] = []
        self.granted: list[int] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.client.on_message = lambda c, u, m: self.messages.append(m.topic)

        def on_subscribe(client, userdata, mid, reasons, props) -> None:
            self.granted.extend(r.value for r in reasons)
            subscribed.set()

        self.client.on_subscribe = on_subscribe
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        assert subscribed.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_anonymous_client_cannot_connect(broker: RunningBroker) -> None:
    assert try_connect(broker.host, broker.port, None, None) == NOT_AUTHORIZED


def test_wrong_password_cannot_connect(broker: RunningBroker) -> None:
    broker.add_account("wb-1", "right")
    assert try_connect(broker.host, broker.port, "wb-1", "wrong") == NOT_AUTHORIZED
    assert try_connect(broker.host, broker.port, "wb-1", "right") == 0


def test_device_cannot_publish_under_another_device_id(broker: RunningBroker) -> None:
    password = broker.add_account("wb-1")
    broker.add_account("wb-2")
    hub = Listener(broker, HUB_USER, broker.hub_password, "natalia/v1/devices/+/alarm")
    device = RawDevice(broker.host, broker.port, "wb-1", password)
    try:
        assert device.publish("alarm", make_alarm("x").to_payload(), device_id="wb-2") == (
            "Not authorized"
        )
        assert device.publish("alarm", make_alarm("y").to_payload()) == "Success"
        deadline = time.monotonic() + 5
        while not hub.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.messages == ["natalia/v1/devices/wb-1/alarm"]
    finally:
        device.close()
        hub.close()


def test_device_cannot_write_hub_channels_of_its_own(broker: RunningBroker) -> None:
    password = broker.add_account("wb-1")
    device = RawDevice(broker.host, broker.port, "wb-1", password)
    try:
        assert device.publish("ack", b"{}") == "Not authorized"
        assert device.publish("cmd", b"{}") == "Not authorized"
    finally:
        device.close()


def test_device_reads_only_its_own_ack(broker: RunningBroker) -> None:
    password = broker.add_account("wb-1")
    spy = Listener(broker, "wb-1", password, "natalia/#", "natalia/v1/devices/wb-2/ack", "$SYS/#")
    hub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=HUB_USER, protocol=mqtt.MQTTv5)
    hub.username_pw_set(HUB_USER, broker.hub_password)
    hub.connect(broker.host, broker.port)
    hub.loop_start()
    try:
        hub.publish("natalia/v1/devices/wb-2/ack", b"{}", qos=1).wait_for_publish(5)
        hub.publish("natalia/v1/devices/wb-1/ack", b"{}", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not spy.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        # The hub published wb-2's ack first; the broker keeps one publisher's order, so a
        # wrongly delivered copy would have arrived before wb-1's.
        assert set(spy.messages) == {"natalia/v1/devices/wb-1/ack"}
        assert all(topic.startswith("natalia/v1/devices/wb-1/") for topic in spy.messages)
    finally:
        hub.disconnect()
        hub.loop_stop()
        spy.close()


def test_client_id_is_forced_to_the_username(broker: RunningBroker) -> None:
    password = broker.add_account("wb-1")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pretend-hub", protocol=mqtt.MQTTv5)
    client.username_pw_set("wb-1", password)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(5)
    client.disconnect()
    client.loop_stop()
    assert "as wb-1 (" in broker.process.log_tail(50)
    assert "as pretend-hub" not in broker.process.log_tail(50)


def test_rendered_files_are_private_and_persistence_is_on(tmp_path) -> None:
    settings = BrokerSettings(data_dir=tmp_path / "b", port=free_port())
    PasswordFile(settings.password_file).set(HUB_USER, "pw")
    with BrokerProcess(settings):
        conf = settings.config_file.read_text()
    for path in (settings.config_file, settings.acl_file, settings.password_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "allow_anonymous false" in conf
    assert "persistence true" in conf
    assert "max_queued_bytes 134217728" in conf
    assert (settings.data_dir / "mosquitto.db").exists()  # snapshot written on exit


def test_password_hash_is_mosquittos_pbkdf2_format() -> None:
    hashed = hash_password("secret", salt=b"0123456789ab")
    assert hashed.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert verify_password("secret", hashed) and not verify_password("Secret", hashed)


@pytest.mark.parametrize("username", ["wb+1", "wb#", "a/b", "", "$SYS"])
def test_account_names_that_break_acl_patterns_are_refused(tmp_path, username: str) -> None:
    with pytest.raises(ValueError, match="invalid device id"):
        PasswordFile(tmp_path / "passwd").set(username, "pw")
