"""The fault scenarios: hub kill, broker kill, database outage, alarm storm (see ``hub.faults``)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicekit import protocol
from devicekit.signing import parse_key, sign, verify
from devicekit.topics import parse_topic, topic
from devicekit.wristband import Wristband, new_alarm_id
from hub.faults.postgres import (
    database_outage,
    scratch_database,
)
from hub.faults.site import (
    ALARM_POSITION,
    DELIVERY_TIMEOUT_S,
    PUBLISH_GRACE_S,
    RECIPIENTS,
    RESEND_INTERVAL_S,
    SLOW_PARTNER_S,
    Claim,
    DeviceAlarm,
    FaultResult,
    Site,
    wait_for,
)
from hub.models import Role


@contextlib.contextmanager
def deployment(
    workdir: Path,
    database_url: str | None = None,
    redelivery_delay_s: float = 1.0,
    delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
) -> Iterator[Site]:
    """A :class:`Site` in ``workdir`` (created), closed again whatever happens."""
    workdir.mkdir(parents=True, exist_ok=False)
    site = Site(workdir, database_url, redelivery_delay_s, delivery_timeout_s)
    try:
        yield site
    finally:
        site.close()


def _started(stack: contextlib.ExitStack, bands: list[Wristband]) -> None:
    for band in bands:
        stack.callback(band.stop)
        band.start()
    for band in bands:
        band.wait_connected(30)


def _trigger(band: Wristband) -> DeviceAlarm:
    alarm = band.trigger(protocol.AlarmKind.PANIC, ALARM_POSITION, battery=80)
    return band.device_id, alarm.alarm_id


def _pending(bands: Collection[Wristband]) -> Callable[[], int]:
    return lambda: sum(len(band.pending()) for band in bands)


def _acked(bands: Collection[Wristband], sent: Collection[DeviceAlarm]) -> int:
    by_id = {band.device_id: band for band in bands}
    return sum(1 for device, alarm_id in sent if by_id[device].last_ack(alarm_id) is not None)


class _AlarmStream(threading.Thread):
    """Raises ``total`` alarms round-robin over ``bands``, one every ``gap`` seconds."""

    def __init__(self, bands: list[Wristband], total: int, gap: float) -> None:
        super().__init__(name="chaos-alarm-stream", daemon=True)
        self.bands, self.total, self.gap = bands, total, gap
        self.sent: list[DeviceAlarm] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for n in range(self.total):
                self.sent.append(_trigger(self.bands[n % len(self.bands)]))
                time.sleep(self.gap)
        except BaseException as exc:  # re-raised by finish() in the scenario's thread
            self.error = exc

    def finish(self) -> list[DeviceAlarm]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.sent


# -- scenarios -------------------------------------------------------------------------------


def run_hub_kill(
    workdir: Path,
    *,
    rounds: int = 5,
    aimed: int = 6,
    devices: int = 4,
    alarms: int = 5,
    seed: int | None = None,
    timeout: float = 120.0,
    delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
) -> FaultResult:
    """``devices`` wristbands raise ``alarms`` each in a stream while the hub is killed with
    SIGKILL ``rounds`` times at random moments (up 0.2-2 s, down 0-1 s) and restarted; then
    each wristband raises one more alarm and the hub is killed ``aimed`` more times, each time
    the moment the restarted hub has a send in flight.

    The recipients answer after ``SLOW_PARTNER_S``, so kills also land in the middle of sends.
    The aimed kills cut the same deliveries off again and again (a hub in a restart loop): an
    interruption is not a failure of the channel, so they must still be delivered (a delivery
    given up instead is never claimed again: the aimed kills stop short of ``aimed``).
    ``delivery_timeout_s`` sets the lease after which a restarted hub sends them again.
    """
    rng = random.Random(seed)
    with (
        deployment(workdir, delivery_timeout_s=delivery_timeout_s) as site,
        contextlib.ExitStack() as stack,
    ):
        site.populate([f"hk-{n:03d}" for n in range(devices)], RECIPIENTS)
        site.receiver.delay = SLOW_PARTNER_S
        site.broker.start()
        site.start_hub()
        bands = [site.wristband(device_id) for device_id in site.passwords]
        _started(stack, bands)
        started = time.monotonic()
        total = devices * alarms
        # Spread the stream over the rounds (one round is about 2.5 s with the hub's start-up).
        stream = _AlarmStream(bands, total, gap=min(1.0, max(0.01, rounds * 2.5 / total)))
        stream.start()
        in_flight: set[Claim] = set()
        try:
            for _ in range(rounds):
                time.sleep(rng.uniform(0.2, 2.0))
                site.kill_hub()
                in_flight |= site.sends_in_flight()  # read while nothing writes
                time.sleep(rng.uniform(0.0, 1.0))
                site.start_hub()
        finally:
            sent = stream.finish()
        sent += [_trigger(band) for band in bands]
        landed = _kill_mid_send(site, aimed, in_flight, wait=4 * delivery_timeout_s + 30)
        settled = site.settle(sent, _pending(bands), timeout)
        most_cuts = max(Counter(row_id for row_id, _ in in_flight).values(), default=0)
        return site.result(
            "hub-kill",
            sent,
            started,
            settled=settled,
            acked=_acked(bands, sent),
            faults=rounds + landed,
            in_flight=in_flight,
            checks={"aimed_kills": landed, "most_cuts_of_one_delivery": most_cuts},
            notes=(
                f"{rounds} x kill -9 of the hub at random moments, {landed} x while it was "
                f"sending; {len(in_flight)} sends in flight at the kills, up to {most_cuts} "
                "of one delivery"
            ),
        )


def _kill_mid_send(site: Site, kills: int, in_flight: set[Claim], wait: float) -> int:
    """Kill the hub ``kills`` times while it sends, and restart it; returns the kills that
    landed. The first lands on whatever the hub claims next; each later one waits until the
    hub claims one of those same deliveries again (after their lease), so they are cut off
    every time — until they are sent, or given up. ``in_flight`` gains the claims caught."""
    landed = 0
    targets: set[int] = set()

    def claimed_again() -> bool:
        fresh = site.sends_in_flight() - in_flight
        return any(row in targets for row, _ in fresh) if targets else bool(fresh)

    for _ in range(kills):
        if not wait_for(claimed_again, wait, interval=0.02):
            break
        site.kill_hub()
        caught = site.sends_in_flight() - in_flight  # read while nothing writes
        in_flight |= caught
        targets = targets or {row for row, _ in caught}
        landed += 1
        site.start_hub()
    return landed


def run_broker_kill(
    workdir: Path, *, devices: int = 4, alarms: int = 4, timeout: float = 120.0
) -> FaultResult:
    """The hub away, ``devices`` wristbands raise ``alarms`` each, half before a broker snapshot
    and half after it; then kill -9 of Mosquitto, restart, hub, wristbands back."""
    probe = "bk-probe"
    with deployment(workdir) as site, contextlib.ExitStack() as stack:
        device_ids = [f"bk-{n:03d}" for n in range(devices)]
        site.populate([*device_ids, probe], RECIPIENTS)
        site.broker.start()
        site.start_hub()  # creates the hub's persistent session: from now on alarms queue for it
        site.stop_hub()
        bands = [site.wristband(device_id) for device_id in device_ids]
        _started(stack, bands)
        started = time.monotonic()
        sent = [_trigger(band) for band in bands for _ in range(alarms - alarms // 2)]
        time.sleep(PUBLISH_GRACE_S)
        snapshot_at = site.wait_for_snapshot(after=time.time())
        sent += [_trigger(band) for band in bands for _ in range(alarms // 2)]
        time.sleep(PUBLISH_GRACE_S)
        site.broker.kill()
        since_snapshot = time.time() - snapshot_at
        for band in bands:  # offline while the hub drains the broker, to see what it kept
            band.stop()
        site.broker.start()
        # A marker queued behind whatever survived: once the hub has it, the queue is drained.
        marker = protocol.Status(state="online", ts=protocol.utcnow(), seq=1)
        _publish_once(site, probe, "status", marker.to_payload())
        site.start_hub()
        drained = wait_for(lambda: site.device_seen(probe), timeout)
        # The hub handles messages of different devices concurrently, so the marker may be
        # stored before what was queued ahead of it: count once the count stops moving.
        kept_by_broker = _settled_count(lambda: site.stored_count(sent), quiet_s=1.0)
        for band in bands:
            band.start()
        settled = site.settle(sent, _pending(bands), timeout)
        lost_by_broker = len(sent) - kept_by_broker
        return site.result(
            "broker-kill",
            sent,
            started,
            settled=settled,
            acked=_acked(bands, sent),
            faults=1,
            checks={
                "kept_by_broker": kept_by_broker,
                "lost_by_broker": lost_by_broker,
                "queue_drained": int(drained),
            },
            notes=(
                f"kill -9 of Mosquitto {since_snapshot:.1f} s after its snapshot; it kept "
                f"{kept_by_broker}, the wristbands re-sent the {lost_by_broker} it lost"
            ),
        )


def run_db_down(
    server_url: str,
    workdir: Path,
    *,
    devices: int = 4,
    alarms: int = 2,
    outage_s: float = 5.0,
    seed: int | None = None,
    timeout: float = 120.0,
) -> FaultResult:
    """A scratch database on the PostgreSQL server of ``server_url`` refuses connections for
    ``outage_s`` seconds while ``devices`` wristbands raise ``alarms`` each, at random moments
    of the outage, in a random order (``seed``); the moment it is back, each raises one more
    (a defender pressing again because nobody came).

    Each wristband then has several alarms in flight at once, and its newest one reaches the hub
    before the older ones are re-sent: the hub must store every one, whatever their order."""
    rng = random.Random(seed)
    with (
        scratch_database(server_url) as database_url,
        deployment(workdir, database_url, redelivery_delay_s=1.0) as site,
        contextlib.ExitStack() as stack,
    ):
        site.populate([f"db-{n:03d}" for n in range(devices)], RECIPIENTS)
        site.broker.start()
        site.start_hub()
        bands = [site.wristband(device_id) for device_id in site.passwords]
        _started(stack, bands)
        started = time.monotonic()
        before = [_trigger(band) for band in bands]  # the path works before the outage
        site.settle(before, _pending(bands), timeout)
        in_flight = site.sends_in_flight()
        errors_before = site.hub_log_count("database error")
        with database_outage(server_url, database_url):
            outage_started = time.monotonic()
            turns = [band for band in bands for _ in range(alarms)]
            during = []
            for band in rng.sample(turns, len(turns)):
                during.append(_trigger(band))
                time.sleep(rng.uniform(0.0, outage_s / len(turns)))
            refused = wait_for(lambda: site.hub_log_count("database error") > errors_before, 30)
            time.sleep(max(0.0, outage_s - (time.monotonic() - outage_started)))
            acked_while_down = _acked(bands, during)
            pending_while_down = len({a.alarm_id for b in bands for a in b.pending()})
            down_for = time.monotonic() - outage_started
        again = [_trigger(band) for band in rng.sample(bands, len(bands))]  # overtaking
        sent = before + during + again
        settled = site.settle(sent, _pending(bands), timeout)
        return site.result(
            "db-down",
            sent,
            started,
            settled=settled,
            acked=_acked(bands, sent),
            faults=1,
            in_flight=in_flight,
            checks={
                "raised_while_down": len(during),
                "raised_right_after": len(again),
                "acked_while_down": acked_while_down,
                "pending_while_down": pending_while_down,
                "storage_errors_seen": int(refused),
            },
            notes=(
                f"database refused connections for {down_for:.1f} s; {len(during)} alarms "
                f"raised meanwhile, {acked_while_down} acked while down, {pending_while_down} "
                f"kept pending on the wristbands, {len(again)} raised right after"
            ),
        )


def run_storm(workdir: Path, *, devices: int = 1000, timeout: float = 120.0) -> FaultResult:
    """``devices`` devices (one broker account each) raise an alarm each at once while the only
    channel answers 503; once every alarm was refused there, the channel recovers."""
    with deployment(workdir) as site:
        site.populate([f"st-{n:04d}" for n in range(devices)], [("partner", Role.TRUSTED)])
        site.receiver.status = 503
        site.broker.start()
        site.start_hub()
        started = time.monotonic()
        storm = asyncio.run(_storm(site, timeout))
        sent = list(storm.alarms.items())

        def all_refused_once() -> bool:
            _, refused = site.receiver.counts()
            return len(refused) >= len(sent)

        refused_all = wait_for(all_refused_once, timeout)
        site.receiver.status = 200
        recovered = time.monotonic()
        down_for = recovered - started
        settled = site.settle(sent, lambda: 0, timeout)
        delivered_after = time.monotonic() - recovered
        _, refused = site.receiver.counts()
        return site.result(
            "storm",
            sent,
            started,
            settled=settled,
            acked=len(storm.acked),
            faults=0,
            checks={
                "refused": sum(refused.values()),
                "all_refused_once": int(refused_all),
                "resent": storm.resent,
            },
            notes=(
                f"{devices} devices connected in {storm.connect_s:.1f} s, published in "
                f"{storm.publish_s:.2f} s, all acked {storm.acked_s:.1f} s later; the channel "
                f"answered 503 for {down_for:.1f} s ({sum(refused.values())} times), everything "
                f"settled {delivered_after:.1f} s after it recovered"
            ),
        )


# -- storm devices ---------------------------------------------------------------------------


@dataclass
class _StormOutcome:
    alarms: dict[str, str] = field(default_factory=dict)  #: device id -> alarm id
    acked: set[str] = field(default_factory=set)  #: alarm ids the hub acked
    resent: int = 0
    connect_s: float = 0.0
    publish_s: float = 0.0
    acked_s: float = 0.0


async def _storm(site: Site, give_up_after: float, connecting: int = 64) -> _StormOutcome:
    """One asyncio MQTT 5 client per device (gmqtt), each publishing one alarm at QoS 1 and
    re-sending it with the same id until the hub's ack, like a real device."""
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv50

    outcome = _StormOutcome()
    everything_acked = asyncio.Event()
    clients: dict[str, Any] = {}
    payloads: dict[str, bytes] = {}

    def on_message(client: Any, topic_name: str, payload: bytes, qos: int, props: Any) -> int:
        with contextlib.suppress(ValueError):
            device_id = parse_topic(topic_name).device_id
            body = verify(parse_key(site.keys[device_id]), topic_name, payload)  # as devices do
            outcome.acked.add(protocol.HubAck.model_validate_json(body).alarm_id)
            if len(outcome.acked) >= len(payloads):
                everything_acked.set()
        return 0

    gate = asyncio.Semaphore(connecting)

    async def connect(device_id: str) -> None:
        client = gmqtt.Client(device_id)
        client.set_auth_credentials(device_id, site.passwords[device_id])
        client.on_message = on_message
        async with gate:
            await client.connect(site.broker.host, site.broker.port, version=MQTTv50)
        clients[device_id] = client
        client.subscribe(topic(device_id, "ack"), qos=1)

    try:
        connecting_since = time.monotonic()
        await asyncio.gather(*(connect(device_id) for device_id in site.passwords))
        outcome.connect_s = time.monotonic() - connecting_since
        for device_id in clients:
            alarm = protocol.Alarm(
                alarm_id=new_alarm_id(),
                kind=protocol.AlarmKind.PANIC,
                ts=protocol.utcnow(),
                seq=1,
                position=ALARM_POSITION,
                battery=80,
            )
            outcome.alarms[device_id] = alarm.alarm_id
            name = topic(device_id, "alarm")
            payloads[device_id] = sign(parse_key(site.keys[device_id]), name, alarm.to_payload())
        first = time.monotonic()
        for device_id, client in clients.items():
            client.publish(topic(device_id, "alarm"), payloads[device_id], qos=1)
        outcome.publish_s = time.monotonic() - first
        deadline = first + give_up_after
        while not everything_acked.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everything_acked.wait(), RESEND_INTERVAL_S)
            for device_id, alarm_id in outcome.alarms.items():
                if alarm_id not in outcome.acked and not everything_acked.is_set():
                    clients[device_id].publish(
                        topic(device_id, "alarm"), payloads[device_id], qos=1
                    )
                    outcome.resent += 1
        outcome.acked_s = time.monotonic() - first
    finally:
        await asyncio.gather(*(c.disconnect() for c in clients.values()), return_exceptions=True)
    return outcome


def _settled_count(count: Callable[[], int], quiet_s: float, limit_s: float = 30.0) -> int:
    """``count()`` once it has not changed for ``quiet_s`` seconds (or after ``limit_s``)."""
    value, since = count(), time.monotonic()
    deadline = since + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = count()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return value


def _publish_once(site: Site, device_id: str, channel: str, payload: bytes) -> None:
    """Connect as ``device_id``, publish at QoS 1, wait for the broker's PUBACK, disconnect."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(device_id, site.passwords[device_id])
    client.connect(site.broker.host, site.broker.port)
    client.loop_start()
    try:
        name = topic(device_id, channel)
        signed = sign(parse_key(site.keys[device_id]), name, payload)
        client.publish(name, signed, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


# -- PostgreSQL ------------------------------------------------------------------------------


SCENARIOS = ("hub-kill", "broker-kill", "db-down", "storm")
