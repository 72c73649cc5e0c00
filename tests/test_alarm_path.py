"""The alarm path end to end: real Mosquitto (shipped config), the hub, real SMTP and HTTP.

Each test states one promise of the product; see the issue "The alarm path, end to end".
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devicekit.signing import split
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.store import Store
from tests.support.brokers import RunningBroker
from tests.support.device import RawDevice, make_alarm
from tests.support.hubs import RunningHub, hub_config, open_store
from tests.support.population import Population, populate
from tests.support.receivers import HTTPReceiver, SMTPReceiver, wait_until


@pytest.fixture
def registry() -> NotifierRegistry:
    return NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))


@pytest.fixture
def store(database_url: str) -> Store:
    return open_store(database_url)


@pytest.fixture
def people(
    store: Store,
    registry,
    broker: RunningBroker,
    smtp_server: SMTPReceiver,
    http_receiver: HTTPReceiver,
) -> Population:
    population = populate(
        store.engine,
        registry,
        broker.process.settings.data_dir,
        contacts={
            "Sister": smtp_server.url("sister@example.org"),
            "Partner NGO": f"json://127.0.0.1:{http_receiver.port}/alerts",
        },
    )
    broker.add_account(population.device_id, population.device_password)
    return population


@pytest.fixture
def device(broker: RunningBroker, people: Population) -> Iterator[RawDevice]:
    client = people.raw_device(broker)
    yield client
    client.close()


def _deliveries_done(store: Store, alarm_id: str, device_id: str = "wb-1", expected: int = 2):
    alarm = store.find_alarm(device_id, alarm_id)
    if alarm is None or alarm.id is None:
        return None
    rows = store.deliveries(alarm.id)
    done = [d for d in rows if d.status in ("sent", "failed", "retrying", "dead")]
    return rows if len(done) == expected else None


def test_alarm_from_wristband_reaches_email_and_webhook(
    broker, database_url, people, store, smtp_server, http_receiver, tmp_path
) -> None:
    from devicekit.protocol import AckStage, AlarmKind, Position, utcnow
    from devicekit.wristband import Wristband

    with RunningHub(hub_config(broker, database_url)):
        wristband = Wristband(
            people.device_id,
            people.device_password,
            key=people.device_key,
            host=broker.host,
            port=broker.port,
            state_dir=tmp_path / "wristband",
        )
        wristband.start()
        try:
            alarm = wristband.trigger(
                AlarmKind.PANIC,
                Position(lat=43.3178, lon=45.6982, accuracy_m=12, fix_ts=utcnow()),
                battery=64,
            )
            wristband.wait_for_ack(alarm.alarm_id, AckStage.NOTIFIED, timeout=20)
        finally:
            wristband.stop()

    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["sister@example.org"]
    assert mail.message["Subject"] == "ALARM PANIC (wristband pulled): Natalia Test"
    assert "43.31780, 45.69820" in mail.text and "±12 m" in mail.text
    assert "https://www.openstreetmap.org/?mlat=43.31780&mlon=45.69820" in mail.text
    [request] = http_receiver.requests
    assert (request.method, request.path) == ("POST", "/alerts")
    body = json.loads(request.body)
    assert body["title"] == "ALARM PANIC (wristband pulled): Natalia Test"
    assert "Europe/Stockholm" in body["message"]
    rows = _deliveries_done(store, alarm.alarm_id)
    assert rows is not None and {r.status for r in rows} == {"sent"}


def test_same_alarm_published_three_times_is_stored_once_and_notified_once(
    broker, database_url, people, store, device, smtp_server, http_receiver
) -> None:
    alarm = make_alarm("retry-1")
    with RunningHub(hub_config(broker, database_url)):
        for _ in range(3):
            device.publish("alarm", alarm.to_payload())
        wait_until(lambda: _deliveries_done(store, "retry-1"))
        wait_until(lambda: store.find_alarm("wb-1", "retry-1").copies_received == 3)
        wait_until(lambda: "notified" in device.stages("retry-1"))
    assert len(store.alarms()) == 1
    assert len(smtp_server.messages) == 1
    assert len(http_receiver.requests) == 1
    assert device.stages("retry-1").count("received") >= 1  # every copy is acknowledged


def test_alarm_published_while_hub_is_down_is_delivered_when_it_starts(
    broker, database_url, people, store, device, smtp_server
) -> None:
    config = hub_config(broker, database_url)
    with RunningHub(config):  # the first start creates the hub's persistent session
        pass
    device.publish("alarm", make_alarm("while-down").to_payload())
    assert store.find_alarm("wb-1", "while-down") is None
    with RunningHub(config):
        wait_until(lambda: _deliveries_done(store, "while-down"))
        wait_until(lambda: device.stages("while-down"))
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize(
    ("channel", "payload", "reason"),
    [
        ("alarm", b"{not json}", "Invalid JSON"),
        ("alarm", b'{"v": 1, "type": "alarm", "kind": "panic"}', "alarm_id: Field required"),
        ("alarm", b'{"v": 1, "type": "alarm"' + b" " * 16_500 + b"}", "exceeds the 16384 limit"),
        ("heartbeat", b'{"v": 1, "type": "alarm"}', "schema error"),
    ],
    ids=["malformed-json", "wrong-schema", "oversized", "type-not-channel"],
)
def test_bad_message_is_kept_with_reason_and_next_alarm_goes_through(
    broker, database_url, people, store, device, smtp_server, channel, payload, reason
) -> None:
    with RunningHub(hub_config(broker, database_url)):
        device.publish(channel, payload)
        device.publish("alarm", make_alarm("after-bad").to_payload())
        wait_until(lambda: _deliveries_done(store, "after-bad"))
    [kept] = store.rejected()
    assert split(kept.payload)[0] == payload and kept.device_id == "wb-1"  # kept as it came
    assert not kept.suspicious  # from its device, correctly signed: only malformed
    assert reason in kept.reason
    assert len(smtp_server.messages) == 1


def test_alarm_for_unknown_device_is_kept_and_reported_to_hq(
    broker, database_url, people, store, registry, smtp_server
) -> None:
    from hub import admin

    admin.add_contact(store.engine, registry, "HQ", smtp_server.url("hq@example.org"), None)
    # A device the broker knows but the hub does not (e.g. registered on another hub).
    password = broker.add_account("wb-stranger")
    stranger = RawDevice(broker.host, broker.port, "wb-stranger", password)
    try:
        with RunningHub(hub_config(broker, database_url)):
            stranger.publish("alarm", make_alarm("stray").to_payload())
            wait_until(lambda: store.rejected())
            wait_until(lambda: any("hq@example.org" in m.rcpt_tos for m in smtp_server.messages))
    finally:
        stranger.close()
    [kept] = store.rejected()
    assert "not registered" in kept.reason and kept.device_id == "wb-stranger"
    assert store.alarms() == []
    report = next(m for m in smtp_server.messages if "hq@example.org" in m.rcpt_tos)
    assert "wb-stranger" in report.text and f"R{kept.id}" in report.text


def test_hanging_channel_is_cut_off_while_others_get_theirs(
    broker, database_url, people, store, device, smtp_server, http_receiver
) -> None:
    http_receiver.delay = 30  # the partner's webhook hangs
    with RunningHub(hub_config(broker, database_url, timeout_s=1.0)):
        device.publish("alarm", make_alarm("hang").to_payload())
        rows = wait_until(lambda: _deliveries_done(store, "hang"), timeout=15)
    by_name = {row.recipient: row for row in rows}
    assert by_name["Sister"].status == "sent"
    assert by_name["Partner NGO"].status == "retrying"  # a timeout is worth another try
    assert "timed out after 1 s" in by_name["Partner NGO"].detail
    assert by_name["Sister"].finished_at < by_name["Partner NGO"].finished_at
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_receiver_slower_than_apprise_defaults_but_within_the_settings_gets_one_post(
    broker, database_url, people, store, device, http_receiver
) -> None:
    """[delivery] timeout_s 15 and [plugins.apprise] timeout 10 are what apply, not Apprise's
    own 4 s read timeout: a webhook answering in 6 s is delivered, once."""
    http_receiver.delay = 6.0
    config = hub_config(broker, database_url, timeout_s=15.0, plugins={"apprise": {"timeout": 10}})
    with RunningHub(config):
        device.publish("alarm", make_alarm("slow-answer").to_payload())
        rows = wait_until(lambda: _deliveries_done(store, "slow-answer"), timeout=30)
    by_name = {row.recipient: row for row in rows}
    assert by_name["Partner NGO"].status == "sent", by_name["Partner NGO"].detail
    assert len(http_receiver.requests) == 1


def test_device_cannot_publish_to_another_devices_topic(
    broker, database_url, people, store, device
) -> None:
    broker.add_account("wb-2")
    with RunningHub(hub_config(broker, database_url)):
        refused = device.publish("alarm", make_alarm("forged").to_payload(), device_id="wb-2")
        accepted = device.publish("alarm", make_alarm("own").to_payload())
        wait_until(lambda: store.find_alarm("wb-1", "own"))
    assert (refused, accepted) == ("Not authorized", "Success")
    assert store.find_alarm("wb-2", "forged") is None
    assert store.rejected() == []
