"""One message the hub cannot handle never stops the hub from taking the next (issue 11, item 2).

Whatever fails while handling one message — a text that fails to render, a value the database
cannot hold, a bug not known yet — ends with that message kept as refused with its reason,
reported to HQ and acknowledged to the broker. Only a database outage withholds the PUBACK.
Before, any such failure left the message unacknowledged in the broker's in-flight window
(100 messages for the hub): a hundred of them and no device's alarm was received any more,
across hub restarts, while /healthz said ok.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from broker.launcher import free_port
from devicekit.protocol import Alarm, AlarmKind, Position, utcnow
from hub import admin, supervision
from hub.faults import database_outage, scratch_database
from hub.ingest import Ingest, StorageUnavailable
from hub.lifecycle import Lifecycle
from hub.models import RejectedMessage
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.store import AlarmOutcome, Store
from tests.support.brokers import RunningBroker
from tests.support.device import RawDevice, make_alarm
from tests.support.handler import DirectHandler, SigningDevice, register
from tests.support.hubs import RunningHub, hub_config, open_store
from tests.support.receivers import SMTPReceiver, wait_until

#: More than Mosquitto keeps in flight for the hub (max_inflight_messages 100).
BEYOND_IN_FLIGHT = 105
LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
FIRST_INSTANT = datetime(1, 1, 1, tzinfo=UTC)


class Bug(Exception):
    """Stands in for a bug not known yet in the code that handles a message."""


@pytest.fixture
def store(database_url: str) -> Store:
    return open_store(database_url)


@pytest.fixture
def band(store: Store, tmp_path: Path) -> SigningDevice:
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    defender = admin.add_defender(store.engine, "Natalia Test")
    assert defender.id is not None
    admin.add_contact(store.engine, registry, "HQ", "mailto://hq@example.org", None)
    return register(store, "wb-1", defender.id, tmp_path / "broker")


def alarm(alarm_id: str, seq: int, battery: int | None = 70) -> Alarm:
    fix = Position(lat=43.317812, lon=45.698234, accuracy_m=9, fix_ts=utcnow())
    return Alarm(
        alarm_id=alarm_id, kind=AlarmKind.PANIC, ts=utcnow(), seq=seq, position=fix, battery=battery
    )


def test_a_bug_while_storing_a_message_keeps_it_refused_reports_it_and_acknowledges_it(
    store: Store,
    handler: DirectHandler,
    band: SigningDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise Bug("the battery was 43.317812")  # the text of an exception may quote a value

    monkeypatch.setattr(supervision, "record_battery", broken)
    message = band.message(alarm("al-1", 1))
    assert handler.one_by_one([message]) == [0]  # PUBACK: success
    [kept] = store.rejected()
    assert re.match(
        r"internal error: Bug while handling this message \(at \S+\.py:\d+ in broken\)", kept.reason
    )
    assert "43.31" not in kept.reason and not kept.suspicious
    assert kept.payload == message[1]  # kept whole, for HQ and the developers
    assert [d.recipient for d in store.deliveries() if d.rejected_pk == kept.id] == ["HQ"]
    assert handler.ingest.counts.internal_errors == 1
    assert store.find_alarm("wb-1", "al-1") is None  # nothing half-stored
    monkeypatch.undo()
    assert handler.one_by_one([band.message(alarm("al-2", 2))]) == [0]
    assert store.find_alarm("wb-1", "al-2") is not None


def test_a_refusal_whose_report_cannot_be_written_is_still_kept_and_acknowledged(
    store: Store,
    handler: DirectHandler,
    band: SigningDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hub import outbox

    def broken(*args: object, **kwargs: object) -> None:
        raise Bug("a translation mistake")

    monkeypatch.setattr(outbox, "render", broken)  # every text, the report to HQ too
    assert handler.one_by_one([band.message(alarm("al-1", 1))]) == [0]
    [kept] = store.rejected()
    assert kept.reason.startswith("internal error: Bug while handling this message")
    assert [d for d in store.deliveries() if d.rejected_pk == kept.id] == []


def test_a_hook_failing_after_the_commit_leaves_the_alarm_stored_and_acknowledged(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    async def broken(outcome: AlarmOutcome) -> None:
        raise Bug("publishing the ack failed")

    ingest = Ingest(handler.db, broken, handler.ingest.on_rejected)
    assert handler.loop.run_until_complete(ingest.handle(*band.message(alarm("al-1", 1)))) == 0
    assert store.find_alarm("wb-1", "al-1") is not None
    assert store.rejected() == []


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_value_the_database_cannot_hold_is_refused_and_kept_never_an_outage(
    store: Store, handler: DirectHandler, band: SigningDevice
) -> None:
    with store.engine.begin() as connection:  # as the column was before: 32-bit
        connection.execute(text("ALTER TABLE alarm ALTER COLUMN seq TYPE integer"))
    assert handler.one_by_one([band.message(alarm("al-big", 2**40))]) == [0]
    [kept] = store.rejected()
    assert kept.reason.startswith("internal error: DataError while handling this message")
    assert str(2**40) not in kept.reason
    assert handler.one_by_one([band.message(alarm("al-small", 2**40 + 1))]) == [0]
    assert handler.one_by_one([band.message(alarm("al-next", 7))]) == [0]  # the next one works
    assert store.find_alarm("wb-1", "al-next") is not None


@pytest.mark.postgres
def test_a_database_outage_withholds_the_puback_and_the_message_is_stored_after(
    postgres_server_url: str, tmp_path: Path
) -> None:
    with scratch_database(postgres_server_url) as url:
        store = open_store(url)
        defender = admin.add_defender(store.engine, "Natalia Test")
        assert defender.id is not None
        band = register(store, "wb-1", defender.id, tmp_path / "broker")
        handler = DirectHandler(store)
        try:
            message = band.message(alarm("al-1", 1))
            with database_outage(postgres_server_url, url):
                with pytest.raises(StorageUnavailable):
                    handler.one_by_one([message])
                assert handler.ingest.counts.internal_errors == 0
            assert handler.one_by_one([message]) == [0]
            assert store.find_alarm("wb-1", "al-1") is not None
            assert store.rejected() == []
        finally:
            handler.close()


# -- through a real broker: more poison than the broker keeps in flight ---------------------------


def register_on(
    broker: RunningBroker, store: Store, device_id: str, timezone: str, contacts: dict[str, str]
) -> RawDevice:
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    data_dir = broker.process.settings.data_dir
    defender = admin.add_defender(store.engine, f"Defender of {device_id}", timezone=timezone)
    assert defender.id is not None
    for name, url in contacts.items():
        admin.add_contact(store.engine, registry, name, url, defender.id)
    creds = admin.add_device(store.engine, device_id, defender.id, data_dir)
    broker.add_account(device_id, creds.password)
    return RawDevice(broker.host, broker.port, device_id, creds.password, creds.key)


def test_alarms_at_the_ends_of_time_beyond_the_in_flight_window_are_stored_and_others_go_on(
    broker: RunningBroker, tmp_path: Path, smtp_server: SMTPReceiver
) -> None:
    """Correctly signed alarms whose time is year 9999 for a defender east of UTC, or year 1
    west of it: each one crashed rendering, stayed in flight, and a hundred stopped intake."""
    url = f"sqlite:///{tmp_path / 'natalia.db'}"
    store = open_store(url)
    told = {"Sister": smtp_server.url("sister@example.org")}
    east = register_on(broker, store, "wb-east", "Asia/Tokyo", told)
    west = register_on(broker, store, "wb-west", "America/Los_Angeles", told)
    genuine = register_on(broker, store, "wb-genuine", "Europe/Berlin", told)
    edge_ids = []
    try:
        with RunningHub(hub_config(broker, url)) as running:
            for n in range(BEYOND_IN_FLIGHT):
                device, moment = (east, LAST_INSTANT) if n % 2 else (west, FIRST_INSTANT)
                edge = make_alarm(f"edge-{n}", seq=n + 1).model_copy(update={"ts": moment})
                device.publish("alarm", edge.to_payload())
                edge_ids.append((device, edge.alarm_id))
            genuine.publish("alarm", make_alarm("genuine", seq=1).to_payload())
            wait_until(lambda: "received" in genuine.stages("genuine"), timeout=60)
            wait_until(lambda: "notified" in genuine.stages("genuine"), timeout=60)
            wait_until(lambda: all(d.stages(a) for d, a in edge_ids), timeout=60)
            hub = running.hub
            assert hub is not None
            wait_until(lambda: hub.health().unacked_messages == 0)
            assert hub.health().internal_errors == 0
    finally:
        for device in (east, west, genuine):
            device.close()
    assert store.rejected() == []
    stored = store.find_alarm("wb-east", "edge-1")
    assert stored is not None and stored.id is not None
    assert "late" in [event.kind for event in store.events(stored.id)]  # far-off clock: flagged
    assert any("10000-01-01" in d.body for d in store.deliveries(stored.id))


def test_alarms_hitting_an_unknown_bug_beyond_the_in_flight_window_are_kept_and_others_go_on(
    broker: RunningBroker,
    tmp_path: Path,
    smtp_server: SMTPReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = Lifecycle.start

    def broken(self: Lifecycle, session: Any, alarm: Any, defender: Any, now: datetime) -> None:
        if alarm.device_id == "wb-buggy":
            raise Bug("alarms of this wristband hit a bug")
        start(self, session, alarm, defender, now)

    monkeypatch.setattr(Lifecycle, "start", broken)
    url = f"sqlite:///{tmp_path / 'natalia.db'}"
    store = open_store(url)
    buggy = register_on(broker, store, "wb-buggy", "UTC", {})
    genuine = register_on(
        broker, store, "wb-genuine", "UTC", {"Sister": smtp_server.url("s@example.org")}
    )
    config = hub_config(broker, url)
    config.http.enabled, config.http.port = True, free_port()
    healthz = f"http://127.0.0.1:{config.http.port}/healthz"

    def kept_whole() -> list[RejectedMessage]:
        return [row for row in store.rejected(limit=200) if row.payload_size > 0]

    try:
        with RunningHub(config):
            for seq in range(1, BEYOND_IN_FLIGHT + 1):
                buggy.publish("alarm", make_alarm(f"bug-{seq}", seq=seq).to_payload())
            genuine.publish("alarm", make_alarm("genuine", seq=1).to_payload())
            wait_until(lambda: "received" in genuine.stages("genuine"), timeout=60)
            wait_until(lambda: smtp_server.messages, timeout=30)
            wait_until(lambda: len(kept_whole()) == BEYOND_IN_FLIGHT, timeout=60)
            health = httpx.get(healthz).json()
    finally:
        buggy.close()
        genuine.close()
    assert health["internal_errors"] == BEYOND_IN_FLIGHT
    assert health["status"] == "ok", health  # it is taking messages: refusing them is work done
    # Every alarm the hub failed to handle is kept whole for HQ (it may be real), however many
    # came; HQ is told of the first at once and of the rest in the account's summary.
    reasons = {row.reason for row in kept_whole()}
    assert len(reasons) == 1 and reasons.pop().startswith("internal error: Bug while handling")
    [summary] = [row for row in store.rejected(limit=200) if row.payload_size == 0]
    assert summary.reason.startswith(f"{BEYOND_IN_FLIGHT} messages refused"), summary.reason


def test_healthz_says_when_the_hub_is_not_taking_messages(
    broker: RunningBroker, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'natalia.db'}"
    store = open_store(url)
    device = register_on(broker, store, "wb-1", "UTC", {})
    config = hub_config(broker, url)
    config.http.enabled, config.http.port = True, free_port()
    config.health.max_unacked_age_s = 1.0
    config.broker.redelivery_delay_s = 0.5
    healthz = f"http://127.0.0.1:{config.http.port}/healthz"
    try:
        with RunningHub(config):
            wait_until(lambda: httpx.get(healthz).status_code == 200)
            with store.engine.begin() as conn:  # the database takes nothing any more
                conn.execute(text("ALTER TABLE alarm RENAME TO alarm_away"))
                conn.execute(text("ALTER TABLE rejectedmessage RENAME TO rejected_away"))
            device.publish("alarm", make_alarm("held-back").to_payload())
            wait_until(lambda: httpx.get(healthz).status_code == 503, timeout=20)
            state = httpx.get(healthz).json()
            assert any(p.startswith("not taking messages") for p in state["problems"]), state
            assert state["unacked_messages"] >= 1 and state["oldest_unacked_s"] > 1.0
            with store.engine.begin() as conn:
                conn.execute(text("ALTER TABLE alarm_away RENAME TO alarm"))
                conn.execute(text("ALTER TABLE rejected_away RENAME TO rejectedmessage"))
            wait_until(lambda: "received" in device.stages("held-back"), timeout=20)
            wait_until(lambda: httpx.get(healthz).status_code == 200, timeout=20)
            assert httpx.get(healthz).json()["oldest_unacked_s"] is None
    finally:
        device.close()
