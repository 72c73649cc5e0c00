"""No account can flood the hub: budgets, aggregated refusals and the database's priorities.

- A flooding account costs HQ one report when it starts and one summary per interval, and the
  database a few payloads kept whole, never one row and one report per message.
- Telemetry beyond an account's fair rate is refused (counted) without touching the database;
  alarms and cancels are never limited.
- The database thread serves alarms before telemetry before refusals, and takes turns between
  accounts, so an alarm never waits behind another account's backlog.
- Retained copies are never replayed to the hub, and one that still arrives is refused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, select

from devicekit.protocol import Heartbeat, Status, utcnow
from devicekit.topics import topic
from hub.admission import REPLAYED_REASON, Admission, Verdict
from hub.config import AdmissionConfig, HubConfig
from hub.database import AsyncStore
from hub.lanes import Lane, Priority, current_lane
from hub.models import Delivery
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.store import Store
from tests.support.brokers import RunningBroker, start_broker
from tests.support.device import make_alarm
from tests.support.hubs import RunningHub, hub_config, open_store, sqlite_url
from tests.support.population import Population, populate
from tests.support.receivers import HTTPReceiver, wait_until

OVERSIZED = b"{" + b" " * 16_500 + b"}"  # above the hub's 16 KiB, below the broker's limit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(sqlite_url(tmp_path))


@pytest.fixture
def people(store: Store, broker: RunningBroker, http_receiver: HTTPReceiver) -> Population:
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    population = populate(
        store.engine,
        registry,
        broker.process.settings.data_dir,
        contacts={},
        hq={"HQ": f"json://127.0.0.1:{http_receiver.port}/hq"},
    )
    broker.add_account(population.device_id, population.device_password)
    return population


def flood_config(broker: RunningBroker, tmp_path: Path, **admission: float) -> HubConfig:
    config = hub_config(broker, sqlite_url(tmp_path))
    config.admission = AdmissionConfig.model_validate(admission)
    return config


def phone(broker: RunningBroker, username: str, password: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def kinds_of_deliveries(store: Store) -> list[str]:
    with Session(store.engine) as session:
        return sorted(d.kind for d in session.exec(select(Delivery)) if d.rejected_pk)


# -- a flooding account -------------------------------------------------------------------------


def test_a_flood_costs_hq_one_report_and_one_summary_and_keeps_three_payloads_whole(
    broker: RunningBroker, tmp_path: Path, store: Store, people: Population
) -> None:
    ana = broker.add_account("ana")  # a responder's phone account gone hostile
    device = people.raw_device(broker)
    with RunningHub(flood_config(broker, tmp_path, refusal_interval_s=600)):
        flooder = phone(broker, "ana", ana)
        sent = [flooder.publish("owntracks/ana/phone", OVERSIZED, qos=1) for _ in range(200)]
        for info in sent:
            info.wait_for_publish(timeout=30)
        device.publish("alarm", make_alarm("genuine").to_payload())
        wait_until(lambda: store.find_alarm(people.device_id, "genuine"), timeout=30)
        wait_until(lambda: len(store.rejected(limit=500)) >= 3, timeout=30)
        time.sleep(0.5)  # nothing more is stored for the flood
        flooder.loop_stop()
    device.close()
    rows = store.rejected(limit=500)  # the hub's stop wrote the open interval's summary
    kept = [row for row in rows if row.payload]
    [summary] = [row for row in rows if not row.payload]
    assert len(kept) == 3
    assert all(len(row.payload) > 16_384 for row in kept)  # whole, as they came
    assert summary.reason.startswith("200 messages refused in the last")
    assert "larger than 16384" in summary.reason
    assert all(f"R{row.id}" in summary.reason for row in kept)
    assert kinds_of_deliveries(store) == ["refused_burst", "rejected"]  # HQ: two reports


def test_telemetry_over_the_accounts_rate_is_refused_but_its_alarm_goes_through(
    broker: RunningBroker, tmp_path: Path, store: Store, people: Population
) -> None:
    device = people.raw_device(broker)
    config = flood_config(
        broker, tmp_path, account_burst=5, account_rate_per_s=0.01, refusal_interval_s=600
    )
    with RunningHub(config):
        for seq in range(1, 41):
            beat = Heartbeat(ts=utcnow(), seq=seq, interval_s=300)
            device.publish("heartbeat", beat.to_payload())
        device.publish("alarm", make_alarm("after-the-flood", seq=100).to_payload())
        wait_until(lambda: store.find_alarm(people.device_id, "after-the-flood"), timeout=30)
    device.close()
    rows = store.rejected(limit=100)
    [summary] = [row for row in rows if not row.payload]
    assert summary.reason.startswith("35 messages refused")
    assert "over this account's rate limit" in summary.reason
    assert len(rows) == 4  # three kept whole and the summary


def test_each_account_gets_its_own_report_when_it_starts_refusing() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(refusal_interval_s=60), clock)
    wb1, ana = "natalia/v1/devices/wb-1/heartbeat", "owntracks/ana/phone"
    assert admission.refusal(wb1, "wb-1", "heartbeat", "bad", 10) is Verdict.REPORT
    assert admission.refusal(ana, None, "owntracks", "bad", 10) is Verdict.REPORT
    assert admission.refusal(wb1, "wb-1", "heartbeat", "bad", 10) is Verdict.KEEP
    assert admission.refusal(wb1, "wb-1", "heartbeat", "bad", 10) is Verdict.KEEP
    assert admission.refusal(wb1, "wb-1", "heartbeat", "bad", 10) is Verdict.COUNT
    clock.now += 61
    [summary] = admission.close_due()  # ana's one refusal was reported already
    assert summary.account.label == "device wb-1" and summary.count == 4
    # Still flooding in the next interval: no report at once, nothing more kept whole.
    assert admission.refusal(wb1, "wb-1", "heartbeat", "bad", 10) is Verdict.COUNT
    clock.now += 61
    assert [s.count for s in admission.close_due()] == [1]
    # Quiet for an interval: the next refusal is news again.
    clock.now += 61
    assert admission.close_due() == []
    assert admission.refusal(wb1, "wb-1", "heartbeat", "bad", 10) is Verdict.REPORT


def test_a_summary_names_a_few_reasons_and_remembers_only_a_bounded_number() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(refusal_interval_s=60), clock)
    name = "owntracks/ana/phone"
    for n in range(1000):  # each names another field the sender made up
        admission.refusal(name, None, "owntracks", f"schema error: field_{'x' * (n % 50)}", 9)
    clock.now += 61
    [summary] = admission.close_due()
    assert summary.count == 1000 and len(summary.reasons) <= 21
    assert summary.reason.startswith("1000 messages refused in the last 61 s: ")
    assert (
        "for other reasons" in summary.reason
        and "9.0 KB in all, the largest 9 bytes" in summary.reason
    )


def test_alarms_and_cancels_pass_whatever_the_accounts_telemetry_did() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(account_burst=2, account_rate_per_s=1), clock)
    heartbeat = topic("wb-1", "heartbeat")
    assert [admission.enter(heartbeat) for _ in range(3)][:2] == [None, None]
    assert admission.enter(heartbeat) is not None
    assert admission.enter(topic("wb-1", "alarm")) is None
    assert admission.enter(topic("wb-1", "cancel")) is None
    assert admission.enter(topic("wb-2", "heartbeat")) is None  # another account's budget
    clock.now += 1
    assert admission.enter(heartbeat) is None  # refilled


# -- the database thread ------------------------------------------------------------------------


def test_database_thread_serves_alarms_first_and_takes_turns_between_accounts(
    tmp_path: Path,
) -> None:
    db = AsyncStore(open_store(sqlite_url(tmp_path)))
    order: list[str] = []
    gate = threading.Event()

    async def scenario() -> None:
        async def job(lane: Lane, name: str) -> None:
            current_lane.set(lane)
            await db.run(order.append, name)

        blocker = asyncio.ensure_future(db.run(gate.wait, 10))
        await asyncio.sleep(0.1)  # the thread is busy: everything below queues
        jobs = [job(Lane(Priority.REFUSAL, "ana"), f"refusal-{n}") for n in range(20)]
        jobs += [job(Lane(Priority.TELEMETRY, "ana"), f"position-{n}") for n in range(20)]
        jobs += [job(Lane(Priority.ALARM, "wb-9"), f"junk-alarm-{n}") for n in range(20)]
        jobs += [job(Lane(Priority.ALARM, "wb-1"), "alarm")]
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0.1)
        gate.set()
        await asyncio.gather(blocker, *tasks)

    asyncio.run(scenario())
    db.close()
    assert order.index("alarm") == 1  # after one job of the account ahead of it, not twenty
    assert order[:21].count("alarm") == 1 and all("alarm" in name for name in order[:21])
    assert order[21:41] == [f"position-{n}" for n in range(20)]  # in order within an account
    assert order[41:] == [f"refusal-{n}" for n in range(20)]


# -- retained copies ----------------------------------------------------------------------------


@pytest.fixture
def unguarded_broker(tmp_path: Path) -> Iterator[RunningBroker]:
    """A broker that keeps every retained message (as one without Natalia's retain guard)."""
    running = start_broker(tmp_path / "broker", retain_guard=False)
    try:
        yield running
    finally:
        running.process.stop()


def test_retained_messages_are_not_replayed_to_the_hub_when_it_reconnects(
    unguarded_broker: RunningBroker, tmp_path: Path, store: Store
) -> None:
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    data_dir = unguarded_broker.process.settings.data_dir
    people = populate(store.engine, registry, data_dir, contacts={}, hq={})
    unguarded_broker.add_account(people.device_id, people.device_password)
    ana = unguarded_broker.add_account("ana")  # no responder: the hub refuses her positions
    config = hub_config(unguarded_broker, sqlite_url(tmp_path))
    with RunningHub(config):
        device = people.raw_device(unguarded_broker)
        name = topic(people.device_id, "alarm")
        alarm = _signed(people, "alarm", make_alarm("kept-once").to_payload())
        device.client.publish(name, alarm, qos=1, retain=True).wait_for_publish(10)
        app = phone(unguarded_broker, "ana", ana)
        app.publish("owntracks/ana/phone", _location(), qos=1, retain=True).wait_for_publish(10)
        wait_until(lambda: store.find_alarm(people.device_id, "kept-once") and store.rejected())
        device.close()
        app.loop_stop()
    for _ in range(2):  # the hub comes back twice: it subscribes again each time
        with RunningHub(config) as hub:
            hub.next_rounds()
            time.sleep(0.5)
    stored = store.find_alarm(people.device_id, "kept-once")
    assert stored is not None and stored.id is not None
    assert [event.kind for event in store.events(stored.id)].count("duplicate") == 0
    assert len(store.rejected()) == 1  # ana's position, refused once when it was live


def test_a_retained_copy_the_hub_still_gets_is_refused_and_a_retained_status_handled(
    broker: RunningBroker, tmp_path: Path, store: Store, people: Population
) -> None:
    with RunningHub(flood_config(broker, tmp_path)) as running:
        hub, loop = running.hub, running._loop
        assert hub is not None and loop is not None

        def deliver(name: str, payload: bytes) -> int:
            """As gmqtt hands the hub a message the broker flagged retained."""
            call = hub.connection._on_message(None, name, payload, 1, {"retain": 1})
            return asyncio.run_coroutine_threadsafe(call, loop).result(10)

        assert deliver("owntracks/ana/phone", _location()) == 0
        [refused] = store.rejected()
        assert refused.reason == REPLAYED_REASON and refused.channel == "owntracks"
        online = Status(state="online", ts=utcnow(), seq=1).to_payload()
        status = _signed(people, "status", online)
        assert deliver(topic(people.device_id, "status"), status) == 0
        assert len(store.rejected()) == 1  # status may be retained: handled as usual


def _signed(people: Population, channel: str, payload: bytes) -> bytes:
    from devicekit.signing import parse_key, sign

    return sign(parse_key(people.device_key), topic(people.device_id, channel), payload)


def _location() -> bytes:
    stamp = int(time.time())
    return b'{"_type":"location","lat":59.3426,"lon":18.0649,"acc":14,"tst":%d}' % stamp
