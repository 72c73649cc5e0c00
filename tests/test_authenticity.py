"""Forged, replayed, late and encrypted messages against a real broker and hub (PROTOCOL.md 5.5).

Whatever fails a check is kept, marked suspicious and reported to HQ; the device's real alarms
still go through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from devicekit.protocol import AlarmKind, Heartbeat, Position, utcnow
from devicekit.signing import new_key, parse_key, sign
from devicekit.topics import topic
from devicekit.wristband import Wristband
from hub import admin
from hub.authenticity import DeviceKey, Suspicious, open_payload
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.store import Store
from tests.support.brokers import RunningBroker
from tests.support.device import RawDevice, make_alarm
from tests.support.hubs import RunningHub, hub_config, open_store
from tests.support.population import Population, populate
from tests.support.receivers import SMTPReceiver, wait_until

LAT, LON = -33.868820, 151.209296


@pytest.fixture
def store(database_url: str) -> Store:
    return open_store(database_url)


@pytest.fixture
def registry() -> NotifierRegistry:
    return NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))


@pytest.fixture
def people(
    store: Store, registry: NotifierRegistry, broker: RunningBroker, smtp_server: SMTPReceiver
) -> Population:
    population = populate(
        store.engine,
        registry,
        broker.process.settings.data_dir,
        contacts={"Sister": smtp_server.url("sister@example.org")},
        hq={"HQ": smtp_server.url("hq@example.org")},
    )
    broker.add_account(population.device_id, population.device_password)
    return population


@pytest.fixture
def device(broker: RunningBroker, people: Population) -> Iterator[RawDevice]:
    client = people.raw_device(broker)
    yield client
    client.close()


def heartbeat(seq: int, interval_s: int) -> bytes:
    return Heartbeat(ts=utcnow(), seq=seq, interval_s=interval_s).to_payload()


def reports_to_hq(smtp_server: SMTPReceiver) -> list[str]:
    return [m.text for m in smtp_server.messages if "hq@example.org" in m.rcpt_tos]


def test_forged_messages_are_suspicious_and_replayed_or_reordered_ones_lose_nothing(
    broker: RunningBroker,
    database_url: str,
    store: Store,
    people: Population,
    device: RawDevice,
    smtp_server: SMTPReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alarm_topic = topic("wb-1", "alarm")
    forged = sign(parse_key(new_key()), alarm_topic, make_alarm("forged", seq=9).to_payload())
    real = make_alarm("real", seq=5).to_payload()
    beat = heartbeat(4, 600)
    with RunningHub(hub_config(broker, database_url)):
        device.publish("alarm", make_alarm("unsigned", seq=8).to_payload(), signed=False)
        device.publish("alarm", forged, signed=False)
        device.publish("alarm", real)
        wait_until(lambda: "received" in device.stages("real"))
        device.publish("alarm", make_alarm("same-seq", seq=5).to_payload())  # a reused number
        device.publish("alarm", make_alarm("older", seq=3).to_payload())  # overtaken on the way
        device.publish("alarm", real)  # an exact replay of a stored alarm: a copy
        device.publish("heartbeat", beat)  # below the alarm mark: its own stream
        device.publish("heartbeat", beat)  # an exact replay (or MQTT redelivery): ignored
        device.publish("heartbeat", heartbeat(2, 900))  # overtaken: alive, but not current
        device.publish("alarm", make_alarm("after", seq=6).to_payload())
        wanted = ("same-seq", "older", "after")
        wait_until(lambda: all("received" in device.stages(alarm_id) for alarm_id in wanted))
        wait_until(lambda: store.find_alarm("wb-1", "real").copies_received == 2)  # type: ignore[union-attr]
        wait_until(lambda: len(reports_to_hq(smtp_server)) >= 2 or None)
    rows = store.rejected()
    kept = {row.reason.split(":")[0]: row for row in rows if row.payload_size > 0}
    assert kept.keys() == {"unsigned message", "wrong signature"}
    assert all(row.suspicious for row in kept.values())
    # The account's refusals of the interval, summed up once (hub/admission.py).
    [summary] = [row for row in rows if row.payload_size == 0]
    assert summary.reason.startswith("2 messages refused"), summary.reason
    assert "2 SUSPICIOUS" in summary.reason
    assert {alarm.alarm_id for alarm in store.alarms()} == {"real", "same-seq", "older", "after"}
    for refused in ("unsigned", "forged"):
        assert device.stages(refused) == []  # nothing refused is ever acked
    reused = store.find_alarm("wb-1", "same-seq")
    assert reused is not None and reused.id is not None
    [flag] = [event for event in store.events(reused.id) if event.kind == "seq_reused"]
    assert flag.detail.startswith("SUSPICIOUS: alarm seq 5 was already used")
    older = store.find_alarm("wb-1", "older")
    assert older is not None and older.id is not None
    assert {event.kind for event in store.events(older.id)} & {
        "seq_reused",
        "seq_below_window",
    } == set()
    [wristband] = admin.list_devices(store.engine)
    assert wristband.heartbeat_interval_s == 600  # from the newest heartbeat, not the late one
    assert (wristband.alarm_seq, wristband.telemetry_seq) == (6, 4)
    reports = reports_to_hq(smtp_server)
    # The first refusal is reported at once; the second only in its account's summary.
    assert sum("Reason: SUSPICIOUS" in text for text in reports) == 1
    assert all(people.device_key not in text for text in reports)
    assert "refused SUSPICIOUS message" in caplog.text  # the hub's log, captured in full
    for secret in (people.device_key, people.device_password, forged.decode()[-66:-2]):
        assert secret not in caplog.text


def test_an_alarm_from_a_wrong_clock_is_delivered_and_flagged_late(
    broker: RunningBroker,
    database_url: str,
    store: Store,
    people: Population,
    device: RawDevice,
    smtp_server: SMTPReceiver,
) -> None:
    alarm = make_alarm("late", seq=1).model_copy(update={"ts": utcnow() - timedelta(hours=2)})
    with RunningHub(hub_config(broker, database_url)):
        device.publish("alarm", alarm.to_payload())
        wait_until(lambda: any("sister@example.org" in m.rcpt_tos for m in smtp_server.messages))
    stored = store.find_alarm("wb-1", "late")
    assert stored is not None and stored.id is not None
    assert stored.clock_skew_s is not None and -7300 < stored.clock_skew_s < -7100
    [late] = [event for event in store.events(stored.id) if event.kind == "late"]
    assert "behind" in late.detail
    assert store.rejected() == []


def test_an_encrypting_wristband_gets_through_and_a_clear_payload_from_it_does_not(
    broker: RunningBroker,
    database_url: str,
    store: Store,
    people: Population,
    smtp_server: SMTPReceiver,
    tmp_path: Path,
) -> None:
    data_dir = broker.process.settings.data_dir
    creds = admin.add_device(store.engine, "wb-enc", people.defender_id, data_dir, encrypt=True)
    broker.add_account("wb-enc", creds.password)
    clear = RawDevice(broker.host, broker.port, "wb-enc", creds.password, creds.key)
    band = Wristband(
        "wb-enc",
        creds.password,
        key=creds.key,
        encrypt=True,
        host=broker.host,
        port=broker.port,
        state_dir=tmp_path / "band",
        resend_interval=0.5,
    )
    try:
        with RunningHub(hub_config(broker, database_url)):
            clear.publish("alarm", make_alarm("in-clear", seq=1).to_payload())
            with band:
                fix = Position(lat=LAT, lon=LON, accuracy_m=5.0, fix_ts=utcnow())
                alarm = band.trigger(AlarmKind.PANIC, fix)
                band.wait_for_ack(alarm.alarm_id, timeout=30)
            wait_until(lambda: store.rejected())
    finally:
        clear.close()
    stored = store.find_alarm("wb-enc", alarm.alarm_id)
    assert stored is not None and (stored.lat, stored.lon) == (LAT, LON)
    [refused] = store.rejected()
    assert refused.suspicious and "must encrypt" in refused.reason
    assert store.find_alarm("wb-enc", "in-clear") is None


def test_a_revoked_device_key_opens_nothing() -> None:
    key = new_key()
    payload = sign(parse_key(key), "natalia/v1/devices/wb-1/alarm", b'{"v":1}')
    assert open_payload(DeviceKey("wb-1", key, False), "natalia/v1/devices/wb-1/alarm", payload)
    with pytest.raises(Suspicious, match="revoked"):
        open_payload(DeviceKey("wb-1", None, False), "natalia/v1/devices/wb-1/alarm", payload)
