#!/usr/bin/env python3
"""Benchmark the alarm path on this machine and print its figures.

A real Mosquitto (shipped config), the hub as its own process on SQLite (or --database-url),
N simulated devices publishing M alarms each at QoS 1, one webhook recipient on a local HTTP
server. Prints throughput (alarms stored per second) and latencies from publish to the hub's
"received" ack and to the recipient's delivery.

    .venv/bin/python scripts/bench_ingest.py [--devices 50] [--alarms 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.launcher import BrokerProcess, free_port
from devicekit.protocol import Alarm, AlarmKind, HubAck, Position, utcnow
from devicekit.signing import parse_key, sign, split
from devicekit.topics import topic
from hub.admin import add_contact, add_defender, add_device
from hub.config import load_config
from hub.db import engine_for
from hub.demo import start_hub_process, stop_process
from hub.localsinks import WebhookCatcher
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.setup import allow_loopback, broker_settings, init_directory
from hub.store import Store


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--alarms", type=int, default=4, help="alarms per device")
    parser.add_argument("--database-url", help="default: SQLite in the temporary directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="natalia-bench-"))
    config_path = init_directory(workdir, port=free_port(), http_port=free_port())
    allow_loopback(config_path)  # the webhook catcher is local
    if args.database_url:
        text = config_path.read_text().replace('"sqlite:///natalia.db"', f'"{args.database_url}"')
        config_path.write_text(text)
    config = load_config(config_path)
    assert config.broker.data_dir is not None
    broker = BrokerProcess(broker_settings(config.broker.data_dir, config.broker.port)).start()
    webhook = WebhookCatcher().start()
    engine = engine_for(config)
    store = Store(engine)
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    defender = add_defender(engine, "Bench Defender")
    assert defender.id is not None
    add_contact(engine, registry, "Webhook", webhook.json_url(), defender.id)
    devices = {}
    keys = {}
    for n in range(args.devices):
        creds = add_device(engine, f"bench-{n:04d}", defender.id, config.broker.data_dir)
        devices[creds.device_id] = creds.password
        keys[creds.device_id] = parse_key(creds.key)
    broker.reload()
    hub = start_hub_process(config_path, workdir / "hub.ready", stderr=subprocess.DEVNULL)
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    lock = threading.Lock()
    clients = []
    try:

        def on_ack(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            ack = HubAck.model_validate_json(split(bytes(message.payload))[0])
            with lock:
                acked.setdefault(ack.alarm_id, time.time())

        for device_id, password in devices.items():
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5
            )
            client.username_pw_set(device_id, password)
            client.on_message = on_ack
            client.connect(broker.host, broker.port)
            client.subscribe(topic(device_id, "ack"), qos=1)
            client.loop_start()
            clients.append((device_id, client))
        time.sleep(0.5)
        total = args.devices * args.alarms
        position = Position(lat=0.0, lon=0.0, accuracy_m=10, fix_ts=utcnow())
        started = time.time()
        for seq in range(args.alarms):
            for device_id, client in clients:
                alarm_id = f"{device_id}-{seq}"
                alarm = Alarm(
                    alarm_id=alarm_id, kind=AlarmKind.PANIC, ts=utcnow(), seq=seq, position=position
                )
                with lock:
                    sent[alarm_id] = time.time()
                name = topic(device_id, "alarm")
                client.publish(name, sign(keys[device_id], name, alarm.to_payload()), qos=1)
        deadline = time.time() + 300
        while len(webhook.received) < total and time.time() < deadline:
            time.sleep(0.05)
        elapsed = time.time() - started
        alarms = store.alarms(limit=total + 10)
        finished = {d.alarm_pk: d.finished_at for d in store.deliveries() if d.finished_at}
        delivery_latency = [
            finished[a.id].timestamp() - sent[a.alarm_id] for a in alarms if a.id in finished
        ]
        ack_latency = [acked[k] - sent[k] for k in sent if k in acked]
        print(
            f"alarms sent {total}, stored {len(alarms)}, delivered {len(webhook.received)}, "
            f"acked {len(ack_latency)} in {elapsed:.2f} s "
            f"({len(alarms) / elapsed:.0f} alarms/s) — {args.devices} devices, "
            f"{config.database.url.split(':')[0]}"
        )
        for name, values in (
            ("publish -> ack received", ack_latency),
            ("publish -> delivered", delivery_latency),
        ):
            if values:
                print(
                    f"{name:<24} p50 {statistics.median(values) * 1000:7.1f} ms   "
                    f"p95 {percentile(values, 0.95) * 1000:7.1f} ms   "
                    f"max {max(values) * 1000:7.1f} ms"
                )
        return 0 if len(alarms) == total == len(webhook.received) else 1
    finally:
        for _, client in clients:
            client.disconnect()
            client.loop_stop()
        stop_process(hub)
        webhook.stop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
