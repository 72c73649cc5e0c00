"""A bare MQTT 5 client standing in for a device, to publish exactly the bytes a test needs."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devicekit.protocol import Alarm, AlarmKind, HubAck, Position, utcnow
from devicekit.topics import topic


class RawDevice:
    def __init__(self, host: str, port: int, device_id: str, password: str) -> None:
        self.device_id = device_id
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
            self.acks.append(HubAck.model_validate_json(message.payload))

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        with self._lock:
            self.puback_reasons[mid] = str(reason)

    def publish(self, channel: str, payload: bytes, device_id: str | None = None) -> str:
        """Publish at QoS 1, wait for the broker's PUBACK and return its reason ("Success")."""
        info = self.client.publish(topic(device_id or self.device_id, channel), payload, qos=1)
        info.wait_for_publish(timeout=5)
        with self._lock:
            return self.puback_reasons[info.mid]

    def stages(self, alarm_id: str) -> list[str]:
        with self._lock:
            return [ack.stage.value for ack in self.acks if ack.alarm_id == alarm_id]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_alarm(alarm_id: str, seq: int = 1, kind: AlarmKind = AlarmKind.PANIC) -> Alarm:
    return Alarm(
        alarm_id=alarm_id,
        kind=kind,
        ts=utcnow(),
        seq=seq,
        position=Position(lat=43.3178, lon=45.6982, accuracy_m=12, fix_ts=utcnow()),
        battery=64,
    )
