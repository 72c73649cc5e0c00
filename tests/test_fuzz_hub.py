"""Hostile input end to end: generated payloads through a real Mosquitto into a real hub.

A registered wristband publishes a batch of hostile payloads on its own topics (signed with its
key, so that they reach the schema parser, or not signed at all) and on the one other topic its
account may write (``owntracks/{its username}/+``), then one valid, signed alarm. Promises:

- the valid alarm is stored, acknowledged and notified, whatever came before it;
- every hostile message the hub received is kept as a RejectedMessage with a reason (but a
  signed, valid alarm with a new id and an old seq, which is stored: PROTOCOL.md 5.3);
- the hub stays healthy, and neither its log nor any reason quotes a code or a coordinate
  from those payloads, nor a payload itself.

Plus the two size limits: the broker drops a packet above ``max_packet_size`` (and the client
that sent it); the hub's own 16384-byte limit is in the batches (tests/test_alarm_path.py also
has an example).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func
from sqlmodel import Session, select

from broker.config import BrokerSettings
from devicekit import protocol
from devicekit.signing import parse_key, sign
from devicekit.topics import topic
from hub.config import AdmissionConfig
from hub.logs import pin_library_loggers
from hub.models import RejectedMessage
from hub.owntracks import parse_owntracks
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.store import Store
from tests.support.brokers import RunningBroker, start_broker
from tests.support.device import RawDevice, make_alarm
from tests.support.hubs import RunningHub, hub_config, open_store
from tests.support.hypothesis import dumps, fuzz, hostile_bytes, json_values, mutated_payloads
from tests.support.population import Population, populate
from tests.support.receivers import SMTPReceiver, wait_until

DEVICE = "wb-1"
#: The largest payload (signature included) the broker takes from the device on its topics.
BROKER_PAYLOAD_ROOM = BrokerSettings(data_dir=Path()).max_packet_size - 512
OWNTRACKS_TOPIC = f"owntracks/{DEVICE}/phone"


@dataclass(frozen=True)
class Hostile:
    """One message to publish: ``topic``, ``payload``, and whether the hub must keep it."""

    topic: str
    payload: bytes
    kept: bool = True


class CapturedLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        with self._lock_lines:
            self.lines.append(text)

    def text(self) -> str:
        with self._lock_lines:
            return "\n".join(self.lines)


@dataclass
class Site:
    broker: RunningBroker
    store: Store
    people: Population
    device: RawDevice
    hub: RunningHub
    smtp: SMTPReceiver
    log: CapturedLog
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(10))
    alarms: itertools.count[int] = field(default_factory=itertools.count)

    def __repr__(self) -> str:  # a failing example prints it: no password or key
        return f"Site({self.store.engine.url.get_backend_name()})"

    def rejected(self) -> int:
        with Session(self.store.engine) as session:
            return int(session.exec(select(func.count()).select_from(RejectedMessage)).one())

    def publish(self, name: str, payload: bytes) -> str:
        """Publish as the device at QoS 1; the broker's PUBACK reason ("Success" when allowed)."""
        info = self.device.client.publish(name, payload, qos=1)
        info.wait_for_publish(timeout=10)
        return self.device.puback_reasons[info.mid]

    def signed(self, name: str, payload: bytes) -> bytes:
        return sign(parse_key(self.people.device_key), name, payload)

    def alarm_goes_through(self) -> None:
        alarm_id = f"after-hostile-{next(self.alarms)}"
        message = make_alarm(alarm_id, seq=next(self.seq))
        assert self.device.publish("alarm", message.to_payload()) == "Success"
        wait_until(lambda: self.store.find_alarm(DEVICE, alarm_id), timeout=20)
        wait_until(lambda: "notified" in self.device.stages(alarm_id), timeout=20)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("fuzz-hub")
    if request.param == "sqlite":
        url = f"sqlite:///{directory / 'natalia.db'}"
    else:
        url = request.getfixturevalue("postgres_server_url")
    log = CapturedLog()
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(log)
    root.setLevel(logging.DEBUG)
    pin_library_loggers(logging.DEBUG)  # as the hub's own CLI does: gmqtt etc. stay at WARNING
    broker = start_broker(directory / "broker")
    smtp = SMTPReceiver().start()
    store = open_store(url)
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    people = populate(
        store.engine,
        registry,
        broker.process.settings.data_dir,
        contacts={"Sister": smtp.url("sister@example.org")},
        device_id=DEVICE,
    )
    broker.add_account(DEVICE, people.device_password)
    config = hub_config(broker, url)
    # Every refusal kept whole, so that each one can be checked; how a flood is aggregated
    # instead is tests/test_admission.py.
    config.admission = AdmissionConfig(account_burst=10**6, refusals_kept_whole=10**6)
    hub = RunningHub(config).start()
    device = RawDevice(broker.host, broker.port, DEVICE, people.device_password, people.device_key)
    running = Site(broker, store, people, device, hub, smtp, log)
    try:
        running.alarm_goes_through()  # the device's alarm sequence mark is now set
        yield running
    finally:
        device.close()
        hub.stop()
        smtp.stop()
        broker.process.stop()
        root.removeHandler(log)
        root.setLevel(saved_level)
        if request.param == "postgres":
            from sqlmodel import SQLModel

            SQLModel.metadata.drop_all(store.engine)
        store.engine.dispose()


# -- what a hostile device sends -------------------------------------------------------------


@st.composite
def hostile_messages(draw: st.DrawFn) -> Hostile:
    kind = draw(
        st.sampled_from(["mutated", "bytes", "unsigned-valid", "replayed", "owntracks", "foreign"])
    )
    if kind == "mutated":  # broken in one way; signed half of the time so the schema sees it
        channel, payload, _ = draw(mutated_payloads())
        # No bigger than what the broker passes on (an oversized one still is, for the hub);
        # the packet limit itself is the test below.
        return Hostile(topic(DEVICE, channel), payload[:BROKER_PAYLOAD_ROOM], kept=True)
    if kind == "bytes":
        channel = draw(st.sampled_from(protocol.DEVICE_CHANNELS))
        return Hostile(topic(DEVICE, channel), draw(hostile_bytes))
    if kind == "unsigned-valid":  # a valid message without its signature
        message = make_alarm(f"unsigned-{draw(st.integers(0, 10**9))}", seq=2**40)
        return Hostile(topic(DEVICE, "alarm"), message.to_payload())
    if kind == "replayed":  # signed, valid, a new id but an old seq: stored, never refused
        message = make_alarm(f"replay-{draw(st.integers(0, 10**9))}", seq=draw(st.integers(0, 9)))
        return Hostile(topic(DEVICE, "alarm"), message.to_payload(), kept=False)  # signed below
    payload = draw(hostile_bytes | json_values.map(dumps) | owntracks_like)
    if kind == "owntracks":  # the one other topic the device's account may write
        try:
            kept = parse_owntracks(OWNTRACKS_TOPIC, payload) is not None
        except ValueError:
            kept = True
        return Hostile(OWNTRACKS_TOPIC, payload, kept=kept)
    # A topic outside its ACL: the broker refuses it, the hub never sees it.
    return Hostile(topic("wb-2", "alarm"), payload, kept=False)


owntracks_like = st.fixed_dictionaries(
    {"_type": st.sampled_from(["location", "lwt", "waypoint", "x"])},
    optional={"lat": json_values, "lon": json_values, "tst": json_values, "acc": json_values},
).map(dumps)


def sign_some(site: Site, message: Hostile, sign_it: bool) -> bytes:
    replayed = b'"alarm_id":"replay-' in message.payload
    unsigned = b'"alarm_id":"unsigned-' in message.payload
    if unsigned or not (sign_it or replayed) or not message.topic.startswith("natalia/"):
        return message.payload
    try:
        return site.signed(message.topic, message.payload)
    except ValueError:  # not a JSON object ending in "}": sent unsigned
        return message.payload


def secrets_in(payload: bytes) -> list[str]:
    """Codes and coordinates in a payload, as a log line or a reason might quote them."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return []
    found: list[str] = []
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if (
                    key in ("code", "lat", "lon")
                    and isinstance(value, str | float)
                    and not isinstance(value, bool)
                ):
                    text = value if isinstance(value, str) else repr(value)
                    if len(text) >= 8:  # shorter ones could be in a log line by chance
                        found.append(text)
                pending.append(value)
        elif isinstance(item, list):
            pending.extend(item)
    return found


CANARIES = [
    # A wrong cancel (extra field) whose code must not reach a log or a reason.
    Hostile(
        topic(DEVICE, "cancel"),
        b'{"v":1,"type":"cancel","alarm_id":"a1","ts":"2026-01-01T00:00:00Z","seq":99,'
        b'"code":"CANARY-code-7731","extra":1}',
    ),
    # An out-of-range latitude with many digits.
    Hostile(
        topic(DEVICE, "location"),
        b'{"v":1,"type":"location","ts":"2026-01-01T00:00:00Z","seq":99,"position":'
        b'{"lat":91.123456789,"lon":45.987654321,"accuracy_m":5,"fix_ts":"2026-01-01T00:00:00Z"}}',
    ),
    # A valid message whose time cannot be converted to UTC (year 1, east of Greenwich).
    Hostile(
        topic(DEVICE, "heartbeat"),
        b'{"v":1,"type":"heartbeat","ts":"0001-01-01T00:00:00+05:00","seq":99,"interval_s":60}',
    ),
    Hostile(
        topic(DEVICE, "alarm"),
        b'{"v":1,"type":"alarm","alarm_id":"year-one","kind":"panic",'
        b'"ts":"0001-01-01T00:00:00+05:00","seq":' + str(2**50).encode() + b"}",
    ),
]


@fuzz(weight=0.05, stall_s=None)
@given(
    batch=st.lists(st.tuples(hostile_messages(), st.booleans()), min_size=1, max_size=25),
)
@example(batch=[(message, True) for message in CANARIES])
def test_hostile_batch_is_kept_and_the_next_alarm_goes_through(
    site: Site, batch: list[tuple[Hostile, bool]]
) -> None:
    before = site.rejected()
    expected = 0
    secrets: list[str] = []
    for message, sign_it in batch:
        payload = sign_some(site, message, sign_it)
        accepted = site.publish(message.topic, payload) == "Success"
        assert accepted == message.topic.startswith((f"natalia/v1/devices/{DEVICE}/", "owntracks/"))
        expected += accepted and message.kept
        secrets += secrets_in(message.payload)
    site.alarm_goes_through()
    wait_until(lambda: site.rejected() >= before + expected, timeout=30)
    time.sleep(0.2)  # nothing more than expected arrives late
    assert site.rejected() == before + expected
    hub = site.hub.hub
    assert hub is not None
    assert hub.health().ok, hub.health().problems
    kept = site.store.rejected(limit=expected) if expected else []
    assert all(row.reason.strip() for row in kept)
    log_text = site.log.text()
    reasons = "\n".join(row.reason for row in kept)
    for secret in secrets:
        assert secret not in log_text and secret not in reasons, secret
    for message, _ in batch:
        if len(message.payload) >= 24:
            assert message.payload.decode("utf-8", "replace") not in log_text


# -- the broker's packet limit ------------------------------------------------------------------


def test_broker_drops_a_packet_above_its_limit_and_the_hub_goes_on(site: Site) -> None:
    limit = BrokerSettings(data_dir=Path()).max_packet_size
    # An account the hub does not know: whatever of it reaches the hub is kept as refused.
    stranger = "wb-big"
    password = site.broker.add_account(stranger)
    connack: dict[str, Any] = {}
    gone = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=stranger, protocol=mqtt.MQTTv5)
    client.username_pw_set(stranger, password)
    client.on_connect = lambda c, u, f, rc, props: connack.update(props=props)
    client.on_disconnect = lambda c, u, f, rc, props: gone.set()
    client.reconnect_delay_set(60, 60)
    client.connect(site.broker.host, site.broker.port)
    client.loop_start()
    name = topic(stranger, "alarm")
    try:
        wait_until(lambda: connack)
        assert connack["props"].MaximumPacketSize == limit
        before = site.rejected()
        client.publish(name, b"{}", qos=1).wait_for_publish(timeout=10)
        wait_until(lambda: site.rejected() == before + 1)  # a small one reaches the hub
        client.publish(name, b'{"pad":"' + b"x" * limit + b'"}', qos=1)
        assert gone.wait(10), "the broker kept a client that sent a packet above its limit"
    finally:
        client.loop_stop()
    site.alarm_goes_through()
    assert site.rejected() == before + 1  # the oversized packet never reached the hub
