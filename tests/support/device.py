"""A bare MQTT 5 client standing in for a device, to publish exactly the bytes a test needs."""

from __future__ import annotations

import itertools
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devicekit.protocol import Alarm, AlarmKind, HubAck, Position, utcnow
from devicekit.signing import parse_key, sign, verify
from devicekit.topics import topic


class RawDevice:
    """Signs what it publishes with ``key`` (as every device must), unless told not to."""

    def __init__(
        self, host: str, port: int, device_id: str, password: str, key: str | None = None
    ) -> None:
        self.device_id = device_id
        self.key = key
        self.acks: list[HubAck] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(device_id, password)
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.puback_reasons: dict[int, str] = {}
        self.client.connect(host, port)
        self.client.loop_start()
        result, _ = self.client.subscribe(topic(device_id, "ack"), qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            body = bytes(message.payload)
            if self.key is not None:  # the hub signs its acks with the device's key
                body = verify(parse_key(self.key), message.topic, body)
            self.acks.append(HubAck.model_validate_json(body))

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        with self._lock:
            self.puback_reasons[mid] = str(reason)

    def publish(
        self, channel: str, payload: bytes, device_id: str | None = None, *, signed: bool = True
    ) -> str:
        """Publish at QoS 1, wait for the broker's PUBACK and return its reason ("Success").

        The payload is signed with the device key first when there is one and ``signed``.
        """
        name = topic(device_id or self.device_id, channel)
        if signed and self.key is not None:
            payload = sign(parse_key(self.key), name, payload)
        info = self.client.publish(name, payload, qos=1)
        info.wait_for_publish(timeout=5)
        with self._lock:
            return self.puback_reasons[info.mid]

    def stages(self, alarm_id: str) -> list[str]:
        with self._lock:
            return [ack.stage.value for ack in self.acks if ack.alarm_id == alarm_id]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


#: Every alarm made here takes a higher seq than the one before, as one device's alarms must
#: (the hub refuses a seq at or below the last it accepted from that device).
_SEQUENCE = itertools.count(1)


def make_alarm(alarm_id: str, seq: int | None = None, kind: AlarmKind = AlarmKind.PANIC) -> Alarm:
    seq = next(_SEQUENCE) if seq is None else seq
    return Alarm(
        alarm_id=alarm_id,
        kind=kind,
        ts=utcnow(),
        seq=seq,
        position=Position(lat=43.3178, lon=45.6982, accuracy_m=12, fix_ts=utcnow()),
        battery=64,
    )
