#!/usr/bin/env python3
"""Benchmark a genuine alarm's delay while another account floods the hub, beside the floor.

A real Mosquitto on the shipped config, the hub as its own process on SQLite, one registered
wristband and HQ's webhook on a local HTTP server. First this machine's floor: a QoS 1 round
trip through the broker, one SQLite commit in WAL mode with fsync, one local HTTP POST. Then a
wristband's alarms idle, and again while a responder's phone account floods the hub with
messages as large as the broker lets through, as fast as it can. Prints publish -> stored
and publish -> first delivery (HQ's webhook) side by side, and what the flood cost: the
database's growth, the reports HQ got, the broker's memory. A measurement, not a test.

    .venv/bin/python scripts/bench_flood.py [--alarms 5] [--flood-seconds 5] [--alarm-after 3]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.accounts import PasswordFile, generate_password
from broker.config import BrokerSettings
from broker.launcher import BrokerProcess, free_port
from devicekit.protocol import Alarm, AlarmKind, HubAck, Position, utcnow
from devicekit.signing import parse_key, sign, split
from devicekit.topics import topic
from hub.admin import add_contact, add_defender, add_device
from hub.config import load_config
from hub.db import engine_for
from hub.demo import start_hub_process, stop_process
from hub.localsinks import WebhookCatcher
from hub.models import Role
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.setup import allow_loopback, broker_settings, init_directory
from hub.store import Store

FLOODER = "flooder"  # a responder's phone account, gone hostile
FLOOD_TOPIC = f"owntracks/{FLOODER}/phone"
#: Room for the topic and MQTT headers below the broker's packet limit.
HEADER_ROOM = 256
FLOOR_SAMPLES = 50


class Receiver(WebhookCatcher):
    """HQ's webhook: when each POST arrived and what it said."""

    def first_alarm_post(self, reference: str) -> float | None:
        for at, message in zip(list(self.arrived), list(self.received), strict=False):
            text = str(message.get("message", ""))
            if str(message.get("title", "")).startswith("ALARM") and reference in text:
                return at
        return None

    def reports(self) -> int:
        """Posts about refused messages (one per message, or one per account and interval)."""
        return sum("efused" in str(message.get("title", "")) for message in list(self.received))


class Client:
    """A paho MQTT 5 client that counts its PUBACKs, and notes when the hub's first ack of each
    alarm arrived (the hub sends it after the alarm's commit)."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.acked = 0
        self.hub_acks: dict[str, float] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic(username, "ack"), qos=1)
        self.client.loop_start()

    def _on_publish(self, *args: object) -> None:
        self.acked += 1

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        ack = HubAck.model_validate_json(split(bytes(message.payload))[0])
        self.hub_acks.setdefault(ack.alarm_id, time.time())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.1f} ms" if samples else "       -"


def max_ms(samples: list[float]) -> str:
    return f"{max(samples) * 1000:8.1f} ms" if samples else "       -"


def timed(action: Callable[[], object], samples: int = FLOOR_SAMPLES) -> list[float]:
    durations = []
    for _ in range(samples):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return durations


def floor(device: Client, device_id: str, receiver: Receiver, workdir: Path) -> dict[str, str]:
    """What this machine cannot go below, measured in the same run."""
    name = topic(device_id, "status")  # nobody subscribes yet: nothing is queued
    round_trip = timed(lambda: device.client.publish(name, b"{}", qos=1).wait_for_publish(5))
    connection = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE t (x BLOB)")

    def commit() -> None:
        connection.execute("BEGIN")
        connection.execute("INSERT INTO t VALUES (?)", (b"x" * 500,))
        connection.execute("COMMIT")

    commits = timed(commit)
    connection.close()
    url = f"http://127.0.0.1:{receiver.port}/floor"
    post = timed(lambda: urllib.request.urlopen(url, data=b"{}", timeout=5).read())
    return {
        "broker QoS 1 round trip": median_ms(round_trip),
        "SQLite WAL commit (fsync)": median_ms(commits),
        "local HTTP POST": median_ms(post),
    }


@dataclass
class Site:
    workdir: Path
    broker: BrokerProcess
    store: Store
    receiver: Receiver
    device_id: str
    device_password: str
    key: str
    flooder_password: str
    #: When HQ gets the summary of an account's refusals (0 on a hub without summaries).
    summary_interval: float
    seq: count[int] = field(default_factory=lambda: count(1))


def make_site(workdir: Path) -> Site:
    config_path = init_directory(workdir, port=free_port(), http_port=free_port())
    allow_loopback(config_path)  # HQ's receiver is local
    config = load_config(config_path)
    assert config.broker.data_dir is not None
    settings = broker_settings(config.broker.data_dir, config.broker.port)
    broker = BrokerProcess(settings).start()
    receiver = Receiver()
    receiver.start()
    engine = engine_for(config)
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    defender = add_defender(engine, "Bench Defender")
    assert defender.id is not None
    url = f"json://127.0.0.1:{receiver.port}/hq"
    add_contact(engine, registry, "HQ", url, None, role=Role.HQ)
    creds = add_device(engine, "wb-bench", defender.id, config.broker.data_dir)
    flooder_password = generate_password()
    PasswordFile(settings.password_file).set(FLOODER, flooder_password)
    broker.reload()
    time.sleep(0.5)
    store = Store(engine)
    admission = getattr(config, "admission", None)
    return Site(
        workdir, broker, store, receiver, creds.device_id, creds.password, creds.key,
        flooder_password, float(getattr(admission, "refusal_interval_s", 0)),
    )  # fmt: skip


def send_alarm(site: Site, device: Client) -> tuple[str, float]:
    seq = next(site.seq)
    alarm_id = f"bench-{seq}"
    position = Position(lat=59.3293, lon=18.0686, accuracy_m=10, fix_ts=utcnow())
    alarm = Alarm(alarm_id=alarm_id, kind=AlarmKind.PANIC, ts=utcnow(), seq=seq, position=position)
    name = topic(site.device_id, "alarm")
    payload = sign(parse_key(site.key), name, alarm.to_payload())
    sent = time.time()
    device.client.publish(name, payload, qos=1)
    return alarm_id, sent


def latencies(
    site: Site, device: Client, sent: list[tuple[str, float]], timeout: float
) -> tuple[list[float], list[float]]:
    """(publish -> stored, publish -> first delivery) of each alarm, waiting up to ``timeout``.
    Stored: the hub's "received" ack reached the wristband (the hub sends it after the commit)."""
    delivered: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(delivered) < len(sent) and time.monotonic() < deadline:
        for alarm_id, at in sent:
            alarm = site.store.find_alarm(site.device_id, alarm_id)
            if alarm is None or alarm_id in delivered:
                continue
            first = site.receiver.first_alarm_post(f"Reference: A{alarm.id}")
            if first is not None:
                delivered[alarm_id] = first - at
        time.sleep(0.05)
    stored = [
        device.hub_acks[alarm_id] - at for alarm_id, at in sent if alarm_id in device.hub_acks
    ]
    return stored, list(delivered.values())


def settle(site: Site, at_least: float, timeout: float) -> None:
    """Wait until the hub has taken the whole flood: refused rows and reports to HQ no longer
    change for 5 s, and ``at_least`` seconds passed (for a summary's interval to end)."""
    started = time.monotonic()
    last, still_since = (-1, -1), time.monotonic()
    while time.monotonic() - started < timeout:
        now = (len(site.store.rejected(limit=100_000)), site.receiver.reports())
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= 5 and time.monotonic() - started >= at_least:
            return
        time.sleep(0.5)


def flood(site: Site, seconds: float, stop: threading.Event, stats: dict[str, float]) -> None:
    """Publish messages as large as the broker takes, as fast as the client can."""
    size = BrokerSettings(data_dir=site.workdir).max_packet_size - HEADER_ROOM
    payload = b"{" + b" " * (size - 2) + b"}"
    flooder = Client(site.broker.port, FLOODER, site.flooder_password)
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < seconds and not stop.is_set():
        flooder.client.publish(FLOOD_TOPIC, payload, qos=1)
        sent += 1
        if sent % 100 == 0:  # let PUBACKs in: paho's queue must not hold the whole flood
            while sent - flooder.acked > 1000 and time.monotonic() - started < seconds:
                time.sleep(0.001)
    stats.update(sent=sent, size=size, seconds=time.monotonic() - started)
    time.sleep(1.0)
    flooder.close()


def database_bytes(workdir: Path) -> int:
    return sum(path.stat().st_size for path in workdir.glob("natalia.db*") if path.is_file())


def resident_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alarms", type=int, default=5, help="idle alarms, one a second")
    parser.add_argument("--flood-alarms", type=int, default=3, help="alarms during the flood")
    parser.add_argument("--flood-seconds", type=float, default=5.0)
    parser.add_argument("--alarm-after", type=float, default=3.0, help="s into the flood")
    parser.add_argument("--timeout", type=float, default=600.0, help="wait for each phase")
    parser.add_argument("--label", help="what is measured (default: git describe)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="natalia-bench-flood-"))
    site = make_site(workdir)
    device = Client(site.broker.port, site.device_id, site.device_password)
    hub = None
    try:
        machine = floor(device, site.device_id, site.receiver, workdir)
        hub = start_hub_process(
            workdir / "hub.toml", workdir / "hub.ready", stderr=subprocess.DEVNULL
        )
        idle = []
        for _ in range(args.alarms):
            idle.append(send_alarm(site, device))
            time.sleep(1.0)
        idle_stored, idle_delivered = latencies(site, device, idle, args.timeout)

        database_before = database_bytes(workdir)
        rss_before = resident_mb(site.broker.pid)
        reports_before = site.receiver.reports()
        stats: dict[str, float] = {}
        stop = threading.Event()
        flooding = threading.Thread(target=flood, args=(site, args.flood_seconds, stop, stats))
        flooding.start()
        time.sleep(args.alarm_after)
        during = []
        for _ in range(args.flood_alarms):
            during.append(send_alarm(site, device))
            time.sleep(0.5)
        rss_peak = resident_mb(site.broker.pid)
        flooding.join()
        flood_stored, flood_delivered = latencies(site, device, during, args.timeout)
        rss_peak = max(rss_peak, resident_mb(site.broker.pid))
        settle(site, site.summary_interval + 3, args.timeout)
        database_growth = database_bytes(workdir) - database_before

        label = (
            args.label
            or subprocess.run(
                ["git", "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        )
        print(f"flood benchmark: {label or '?'}, {os.cpu_count()} cores, SQLite")
        print("floor (median of 50): " + " | ".join(f"{k} {v.strip()}" for k, v in machine.items()))
        print(f"{'':28}{'idle (median)':>16}{'flood (median)':>18}{'flood (max)':>16}")
        for name, quiet, busy in (
            ("publish -> stored", idle_stored, flood_stored),
            ("publish -> first delivery", idle_delivered, flood_delivered),
        ):
            print(f"{name:28}{median_ms(quiet):>16}{median_ms(busy):>18}{max_ms(busy):>16}")
        print(
            f"alarms: idle {len(idle_delivered)}/{len(idle)} delivered, during the flood "
            f"{len(flood_delivered)}/{len(during)} delivered"
        )
        print(
            f"flood: {int(stats['sent'])} messages of {int(stats['size']):,} bytes in "
            f"{stats['seconds']:.1f} s ({stats['sent'] * stats['size'] / 1e6:.0f} MB) "
            f"from one OwnTracks account"
        )
        print(
            f"cost once the hub took it all: database +{database_growth / 1e6:.1f} MB, reports "
            "to HQ "
            f"{site.receiver.reports() - reports_before}, refused rows "
            f"{len(site.store.rejected(limit=100_000))}, broker RSS {rss_before:.0f} -> "
            f"{rss_peak:.0f} MB"
        )
        delivered_all = len(idle_delivered) == len(idle) and len(flood_delivered) == len(during)
        return 0 if delivered_all else 1
    finally:
        device.close()
        if hub is not None:
            stop_process(hub)
        site.receiver.stop()
        site.broker.stop()


if __name__ == "__main__":
    sys.exit(main())
