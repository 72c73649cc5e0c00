"""The anti-replay window (PROTOCOL.md 5.3; issue 11, item 3): a genuine message is never refused
for arriving out of order, a replay stays harmless, and every seq the protocol allows is stored.

Re-delivery after an outage, a reconnect, several messages in flight per device and shared
subscriptions all reorder a device's messages. Before the window, the hub refused every alarm
below the highest seq it had accepted as a "replay", acknowledged it, and the broker dropped it:
after a database outage most alarms of a busy wristband were lost.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlmodel import Session, select

from devicekit.protocol import Alarm, AlarmKind, Cancel, Heartbeat, Location, Position, utcnow
from devicekit.signing import new_key, parse_key, sign
from hub import admin
from hub.actions import AlarmActions
from hub.authenticity import REPLAY_WINDOW, ReplayWindow, SeqVerdict
from hub.lifecycle import Lifecycle
from hub.models import Device, DeviceAck
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.store import Store
from tests.support.brokers import RunningBroker
from tests.support.device import make_alarm
from tests.support.handler import DirectHandler, SigningDevice, register
from tests.support.hubs import RunningHub, hub_config, open_store
from tests.support.population import populate
from tests.support.receivers import SMTPReceiver, wait_until

#: A seq a device might take from its clock: 2026-01-01T00:00:00Z in milliseconds (> 2**31).
MILLISECOND_SEQ = 1_767_225_600_000


def alarm(alarm_id: str, seq: int) -> Alarm:
    return Alarm(alarm_id=alarm_id, kind=AlarmKind.PANIC, ts=utcnow(), seq=seq, battery=70)


def heartbeat(seq: int, interval_s: int = 300) -> Heartbeat:
    return Heartbeat(ts=utcnow(), seq=seq, interval_s=interval_s, battery=80)


def cancel(alarm_id: str, seq: int, code: str = "4711") -> Cancel:
    return Cancel(alarm_id=alarm_id, ts=utcnow(), seq=seq, code=code)


# -- the window itself ------------------------------------------------------------------------


def test_window_tells_new_seen_and_too_old_numbers_apart() -> None:
    window = ReplayWindow()
    assert window.verdict(50) is SeqVerdict.NEW
    window.mark(50)
    assert window.verdict(50) is SeqVerdict.SEEN
    assert window.verdict(49) is SeqVerdict.NEW  # overtaken on the way: still new
    window.mark(49)
    assert window.verdict(49) is SeqVerdict.SEEN
    window.mark(60)  # the window slides up; what it saw stays seen
    assert [window.verdict(n) for n in (60, 50, 49, 48)] == [
        SeqVerdict.SEEN,
        SeqVerdict.SEEN,
        SeqVerdict.SEEN,
        SeqVerdict.NEW,
    ]
    assert window.verdict(60 - REPLAY_WINDOW + 1) is SeqVerdict.NEW
    assert window.verdict(60 - REPLAY_WINDOW) is SeqVerdict.BELOW


def test_window_jumping_to_the_largest_seq_forgets_what_it_saw() -> None:
    window = ReplayWindow()
    window.mark(7)
    window.mark(2**53 - 1)  # no 2**53-bit shift: a jump of a whole window starts afresh
    assert window.verdict(2**53 - 1) is SeqVerdict.SEEN
    assert window.verdict(2**53 - 2) is SeqVerdict.NEW
    assert window.verdict(7) is SeqVerdict.BELOW
    assert window.seen == 1


def test_window_is_the_same_after_a_trip_through_the_device_row() -> None:
    window = ReplayWindow()
    for seq in random.Random(3).sample(range(5000, 6000), 400):
        window.mark(seq)
    again = ReplayWindow.load(window.highest, window.dump())
    assert again == window
    assert ReplayWindow.load(None, window.dump()) == ReplayWindow()  # reset by a new key


def test_heartbeats_of_1000_devices_reordered_by_the_broker_are_never_suspicious() -> None:
    """10 heartbeats of each of 1,000 devices, each one displaced by up to 100 places (the
    broker's in-flight window) in the stream the hub sees: all new, once; replays all seen."""
    rng = random.Random(11)
    arrivals = sorted(
        ((device, seq) for device in range(1000) for seq in range(1, 11)),
        key=lambda item: item[0] * 10 + item[1] + rng.uniform(-100, 100),
    )
    windows = [ReplayWindow() for _ in range(1000)]
    verdicts = []
    for device, seq in arrivals:
        verdicts.append(windows[device].verdict(seq))
        windows[device].mark(seq)
    assert set(verdicts) == {SeqVerdict.NEW}
    assert {windows[d].verdict(s) for d, s in arrivals} == {SeqVerdict.SEEN}


# -- through the hub's handler, on SQLite and PostgreSQL ----------------------------------------


@pytest.fixture
def store(database_url: str) -> Store:
    return open_store(database_url)


@pytest.fixture
def defender_id(store: Store) -> int:
    defender = admin.add_defender(store.engine, "Natalia Test")
    assert defender.id is not None
    admin.set_defender_options(store.engine, defender.id, cancel_code="4711")
    return defender.id


@pytest.fixture
def band(store: Store, defender_id: int, tmp_path: Path) -> SigningDevice:
    return register(store, "wb-1", defender_id, tmp_path / "broker")


def test_alarms_arriving_in_reverse_seq_order_are_all_stored_and_replays_are_copies(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    sent = [band.message(alarm(f"al-{seq}", seq)) for seq in range(1, 13)]
    assert handler.one_by_one(sent[::-1]) == [0] * 12
    assert handler.rejections == []
    assert sorted(a.alarm_id for a in store.alarms(limit=20)) == sorted(
        f"al-{n}" for n in range(1, 13)
    )
    assert all(outcome.created for outcome in handler.alarms)
    handler.alarms.clear()
    shuffled = random.Random(5).sample(sent, len(sent))
    assert handler.one_by_one(shuffled) == [0] * 12  # exact replays: copies, acked again
    assert [outcome.created for outcome in handler.alarms] == [False] * 12
    assert handler.rejections == []
    forged = (
        band.message(alarm("forged", 13))[0],
        sign(parse_key(new_key()), sent[0][0], alarm("forged", 13).to_payload()),
    )
    assert handler.one_by_one([forged]) == [0]  # kept, reported and acknowledged to the broker
    [refused] = store.rejected()
    assert refused.suspicious and refused.reason.startswith("wrong signature")
    assert store.find_alarm("wb-1", "forged") is None


def test_an_alarm_far_below_the_window_or_with_a_used_seq_is_stored_and_flagged(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    late_seq = 10_000 - REPLAY_WINDOW - 5
    deliveries = [
        band.message(alarm("newest", 10_000)),
        band.message(alarm("held-up", late_seq)),
        band.message(alarm("reused", 10_000)),  # a new alarm id on a number already used
    ]
    assert handler.one_by_one(deliveries) == [0, 0, 0]
    assert handler.rejections == []

    def odd_seq_events(alarm_id: str) -> list[str]:
        stored = store.find_alarm("wb-1", alarm_id)
        assert stored is not None and stored.id is not None
        return [e.detail for e in store.events(stored.id) if e.kind.startswith("seq_")]

    assert odd_seq_events("newest") == []
    [held_up] = odd_seq_events("held-up")
    assert held_up.startswith(f"alarm seq {late_seq} arrived after messages more than")
    [reused] = odd_seq_events("reused")
    assert reused.startswith("SUSPICIOUS: alarm seq 10000 was already used")


def test_heartbeats_reordered_replayed_or_too_old_are_never_reported(
    store: Store, handler: DirectHandler, defender_id: int, tmp_path: Path
) -> None:
    devices = [register(store, f"hb-{n:02d}", defender_id, tmp_path / "broker") for n in range(20)]
    beats = [
        d.message(heartbeat(seq, interval_s=60 * seq)) for d in devices for seq in range(1, 11)
    ]
    arrivals = random.Random(7).sample(beats, len(beats))
    assert handler.all_at_once(arrivals) == [0] * len(beats)
    assert handler.one_by_one(arrivals[:50]) == [0] * 50  # redelivered: ignored as copies
    too_old = devices[0].message(heartbeat(1, interval_s=60))
    far_ahead = devices[0].message(heartbeat(REPLAY_WINDOW + 20, interval_s=3600))
    assert handler.one_by_one([far_ahead, too_old]) == [0, 0]
    assert handler.rejections == [] and store.rejected() == []
    assert handler.ingest.counts.stale_telemetry == 1
    rows = {d.id: d for d in admin.list_devices(store.engine)}
    assert {rows[d.device_id].telemetry_seq for d in devices[1:]} == {10}
    assert {rows[d.device_id].heartbeat_interval_s for d in devices[1:]} == {600}  # the newest
    assert rows["hb-00"].heartbeat_interval_s == 3600


def test_a_location_redelivered_is_passed_on_once(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    where = Position(lat=43.3178, lon=45.6982, accuracy_m=8, fix_ts=utcnow())
    location = band.message(Location(alarm_id="al-1", ts=utcnow(), seq=3, position=where))
    handler.one_by_one([band.message(alarm("al-1", 2)), location, location])
    stored = store.find_alarm("wb-1", "al-1")
    assert stored is not None and stored.id is not None
    assert [e.kind for e in store.events(stored.id)].count("location") == 1


def device_acks(store: Store, alarm_id: str) -> list[str]:
    with Session(store.engine) as session:
        rows = session.exec(select(DeviceAck).where(DeviceAck.alarm_id == alarm_id))
        return [row.stage for row in rows]


def test_a_cancel_is_applied_once_and_every_copy_is_answered_again(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    the_cancel = band.message(cancel("al-1", 5))
    handler.one_by_one([band.message(alarm("al-1", 2)), the_cancel])
    assert device_acks(store, "al-1") == ["cancelled"]
    handler.one_by_one([the_cancel, the_cancel])  # the device did not get the ack: re-sends
    assert device_acks(store, "al-1") == ["cancelled"] * 3
    stored = store.find_alarm("wb-1", "al-1")
    assert stored is not None and stored.id is not None
    assert [e.kind for e in store.events(stored.id)].count("cancelled") == 1
    assert handler.rejections == []


def test_a_cancel_for_an_alarm_hq_already_resolved_is_answered_resolved(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    handler.one_by_one([band.message(alarm("al-1", 2))])
    stored = store.find_alarm("wb-1", "al-1")
    assert stored is not None
    AlarmActions(store.engine, Lifecycle()).resolve(f"A{stored.id}", "HQ")
    handler.one_by_one([band.message(cancel("al-1", 5))])
    assert device_acks(store, "al-1") == ["resolved", "resolved"]  # the stage, then the answer


def test_a_replayed_cancel_never_closes_an_alarm_opened_again(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    the_cancel = band.message(cancel("al-1", 5))
    handler.one_by_one([band.message(alarm("al-1", 2)), the_cancel])
    with Session(store.engine) as session:  # HQ opens it again (the cancel was coerced)
        stored = store._find_alarm(session, "wb-1", "al-1")
        assert stored is not None
        stored.state, stored.closed_at = "received", None
        session.add(stored)
        session.commit()
    handler.one_by_one([the_cancel])
    reopened = store.find_alarm("wb-1", "al-1")
    assert reopened is not None and reopened.state == "received"


def test_an_older_cancel_the_device_replaced_is_only_answered(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    wrong_then_right = [band.message(cancel("al-1", 5, "0000")), band.message(cancel("al-1", 6))]
    handler.one_by_one([band.message(alarm("al-1", 2)), *wrong_then_right[::-1]])
    stored = store.find_alarm("wb-1", "al-1")
    assert stored is not None and stored.id is not None
    assert stored.state == "cancelled" and stored.cancel_seq == 6
    assert "cancel_refused" not in [e.kind for e in store.events(stored.id)]
    assert device_acks(store, "al-1") == ["cancelled", "cancelled"]


def test_a_genuine_cancel_below_the_window_is_still_applied(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    late = band.message(cancel("al-1", 3))
    newer = band.message(alarm("al-2", 3 + REPLAY_WINDOW + 10))
    handler.one_by_one([band.message(alarm("al-1", 2)), newer, late])
    stored = store.find_alarm("wb-1", "al-1")
    assert stored is not None and stored.id is not None and stored.state == "cancelled"
    assert "seq_below_window" in [e.kind for e in store.events(stored.id)]


def test_a_cancel_numbered_before_its_alarm_is_suspicious(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    handler.one_by_one([band.message(alarm("al-1", 9)), band.message(cancel("al-1", 4))])
    [refused] = store.rejected()
    assert refused.suspicious and refused.reason.startswith("cancel seq 4 is not above seq 9")
    stored = store.find_alarm("wb-1", "al-1")
    assert stored is not None and stored.state == "received"


# -- through a real broker ----------------------------------------------------------------------


def test_alarms_queued_for_the_hub_in_reverse_seq_order_are_all_stored_and_acked(
    broker: RunningBroker, database_url: str, smtp_server: SMTPReceiver
) -> None:
    """The broker holds them for the hub's session while the hub is away, newest first."""
    store = open_store(database_url)
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    people = populate(store.engine, registry, broker.process.settings.data_dir, contacts={})
    broker.add_account(people.device_id, people.device_password)
    config = hub_config(broker, database_url)
    RunningHub(config).start().stop()  # creates the hub's persistent session
    device = people.raw_device(broker)
    try:
        for seq in range(20, 0, -1):
            device.publish("alarm", make_alarm(f"al-{seq}", seq=seq).to_payload())
        with RunningHub(config):
            every_one = [f"al-{seq}" for seq in range(1, 21)]
            wait_until(lambda: all("received" in device.stages(a) for a in every_one), timeout=30)
    finally:
        device.close()
    assert len(store.alarms(limit=50)) == 20
    assert store.rejected() == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_millisecond_timestamp_as_seq_is_stored_on_postgres_and_others_go_on(
    broker: RunningBroker, database_url: str, smtp_server: SMTPReceiver
) -> None:
    """More messages than the broker keeps in flight for the hub (100), each with a seq above
    2**31: with 32-bit columns each raised a database error, got no PUBACK and, redelivered for
    ever, stopped every other device's alarms."""
    store = open_store(database_url)
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    data_dir = broker.process.settings.data_dir
    clock_seq = populate(store.engine, registry, data_dir, contacts={}, device_id="wb-ms")
    other = populate(
        store.engine,
        registry,
        data_dir,
        contacts={"Sister": smtp_server.url("sister@example.org")},
        device_id="wb-other",
    )
    for people in (clock_seq, other):
        broker.add_account(people.device_id, people.device_password)
    first, second = clock_seq.raw_device(broker), other.raw_device(broker)
    config = hub_config(broker, database_url)
    config.admission.account_burst = 200  # every heartbeat reaches the database, none refused
    try:
        with RunningHub(config):
            for n in range(105):
                beat = heartbeat(MILLISECOND_SEQ + n).to_payload()
                first.publish("heartbeat", beat)
            first.publish("alarm", make_alarm("ms-seq", seq=MILLISECOND_SEQ + 200).to_payload())
            second.publish("alarm", make_alarm("after-ms", seq=1).to_payload())
            wait_until(lambda: "received" in second.stages("after-ms"), timeout=30)
            wait_until(lambda: smtp_server.messages, timeout=30)
            wait_until(lambda: "received" in first.stages("ms-seq"), timeout=30)
    finally:
        first.close()
        second.close()
    stored = store.find_alarm("wb-ms", "ms-seq")
    assert stored is not None and stored.seq == MILLISECOND_SEQ + 200
    [device] = [d for d in admin.list_devices(store.engine) if d.id == "wb-ms"]
    assert (device.telemetry_seq, device.alarm_seq) == (
        MILLISECOND_SEQ + 104,
        MILLISECOND_SEQ + 200,
    )
    assert store.rejected() == []
    with Session(store.engine) as session:  # the window survived the trip through BIGINT/BYTEA
        row = session.get(Device, "wb-ms")
        assert row is not None
        window = ReplayWindow.load(row.telemetry_seq, row.telemetry_seen)
        assert window.verdict(MILLISECOND_SEQ) is SeqVerdict.SEEN
