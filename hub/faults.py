"""Fault injection: show, on this machine, that alarms survive the faults a deployment meets.

An alarm-receiving centre is trusted because it can *show* that alarms survive faults. Each
scenario starts a deployment on loopback in a directory of its own (Mosquitto with the shipped
config, ``natalia hub run`` as a child process, a local webhook receiver standing in for every
recipient), raises alarms the way wristbands do (stored on the device, re-sent with the same id
until the hub's ack), injects one kind of fault and counts what came out at the other end:

==========  ================================================================================
sent        distinct alarm ids the wristbands raised
stored      distinct alarms in the hub's database (its unique key forbids a second row)
notified    alarms every recipient received: the receiver answered 2xx *and* the hub
            recorded a ``sent`` delivery
duplicated  extra copies of an alarm a recipient had already received
lost        sent - stored, plus stored alarms that some recipient never received
==========  ================================================================================

The scenarios and what each one proves:

``hub-kill``
    A stream of alarms from several wristbands while the hub is killed with SIGKILL at random
    moments and restarted, N times. Proves: the commit-before-PUBACK rule plus the broker's
    redelivery and the devices' re-sends lose nothing, and a delivery cut off by the crash is
    sent again after the restart (at-least-once), with duplicates only where the bound below
    allows them.
``broker-kill``
    The hub is away; wristbands raise alarms that Mosquitto queues for the hub's persistent
    session; Mosquitto is killed with SIGKILL right after a persistence snapshot, so it loses
    what arrived since; it is restarted, the hub drains what the broker kept, then the
    wristbands come back and re-send what was never acknowledged. Proves: a broker crash costs
    at most the snapshot window, and the devices' store-and-forward covers that window.
``db-down``
    A fresh PostgreSQL database stops accepting connections (``ALLOW_CONNECTIONS false`` and
    its sessions terminated; the server itself keeps running) while alarms arrive, then accepts
    them again. Proves: the hub acknowledges nothing it could not store (the wristbands keep the
    alarms pending), and processes everything once the database is back.
``storm``
    1,000 devices raise an alarm each within seconds while the only channel answers 503; then it
    recovers. Proves: ingest keeps up, every alarm is stored and acknowledged, and the
    dispatcher's retries deliver every alarm once the channel works again.

**The duplicate bound.** The hub delivers at least once. A send begins by *claiming* its
delivery row (``sending``, ``attempts`` + 1) and ends by recording the result; a claim a crash
leaves open is taken back when its lease expires and the message is sent again. So a recipient
gets a message twice only where a fault cut a claim off between the send and the record: at
most one extra copy per claim caught open. Each scenario reads the open claims, as (row,
attempt), from the database at every fault (while the killed hub is down; just before an
outage) and checks, per row, *extra copies <= its claims caught open* (``unexplained_duplicates``
counts the excess: it must be 0) and, in total, *duplicated <= claims caught open*
(``duplicate_bound``) *<= faults x the most claims open at one fault*. That last factor is not a
constant: the dispatcher claims up to 100 rows per round and may start a round before the last
one finished, so open claims are bounded only by the deliveries not yet finished (recipients x
alarms whose first round is open). A crash during a burst, or with slow recipients, costs more
duplicates than a crash at rest. A fault that does not kill the hub should cost none.

Used by ``scripts/chaos.py`` (operators: the table) and ``tests/test_faults.py`` (small sizes).
This is operator tooling that starts processes and opens ports on loopback only; point it at a
PostgreSQL server only with a role that may create and drop its own scratch database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from broker.launcher import BrokerProcess, free_port
from devicekit import protocol
from devicekit.topics import topic
from devicekit.wristband import Wristband, new_alarm_id
from hub import admin
from hub.db import make_engine
from hub.demo import start_hub_process, stop_process
from hub.models import OPEN_STATUSES, Alarm, Delivery, Device, Role
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.setup import broker_settings, init_directory

#: How often the simulated devices re-send what the hub has not acknowledged (devicekit's
#: default, so the hub sees the load real wristbands would cause).
RESEND_INTERVAL_S = 5.0
#: Time for the broker to PUBACK what a wristband just published on loopback.
PUBLISH_GRACE_S = 0.5
#: How long the recipients take to answer in ``hub-kill``: long enough for kills to catch sends
#: in flight (on loopback a send takes milliseconds), short next to the delivery timeout.
SLOW_PARTNER_S = 0.5
#: ``[delivery] timeout_s`` of the chaos sites. A row a killed hub left ``sending`` is taken back
#: once its lease (twice this) expires, so this sets how long recovery after a kill takes.
DELIVERY_TIMEOUT_S = 5
#: Recipients of every alarm in the fault scenarios: HQ and two trusted contacts.
RECIPIENTS: tuple[tuple[str, Role], ...] = (
    ("hq", Role.HQ),
    ("trusted-1", Role.TRUSTED),
    ("trusted-2", Role.TRUSTED),
)
#: One stage, no reminders: every message a recipient gets about an alarm is its first message,
#: so a second copy is a duplicate and nothing else.
POLICY = """\
[[stages]]
name = "first"
roles = ["hq", "trusted"]
condition = "immediately"
"""
#: How the receiver recognises an alarm's first message (hub/messages/en.toml, [alarm]):
#: the title starts with "ALARM " ("REMINDER: ..." and reports to HQ do not), the body names
#: the alarm's reference.
ALARM_TITLE_PREFIX = "ALARM "
REFERENCE = re.compile(r"^Reference: (A\d+)$", re.MULTILINE)
#: Never inherited by the hub child: the scenario must not run against an operator's real
#: database or broker account.
_SCRUBBED_ENV = ("NATALIA_DATABASE_URL", "NATALIA_BROKER_PASSWORD", "NATALIA_CONFIG")
_POSITION = protocol.Position(lat=59.32932, lon=18.06858, accuracy_m=9.0, fix_ts=protocol.utcnow())

DeviceAlarm = tuple[str, str]  # (device id, alarm id)
Claim = tuple[int, int]  # (delivery id, its attempt number): one send the hub started


@dataclass(frozen=True)
class FaultResult:
    """One row of the chaos table, with the facts each scenario's checks need."""

    scenario: str
    sent: int
    stored: int
    notified: int
    duplicated: int
    lost: int
    seconds: float  #: from the first alarm to settled (set-up not included)
    acked: int  #: alarms whose device received the hub's ack
    faults: int  #: kills or outages injected
    duplicate_bound: int  #: sends (claims) caught in flight by the faults
    unexplained_duplicates: int  #: extra copies of rows that no fault caught in flight
    checks: dict[str, int] = field(default_factory=dict)  #: scenario-specific facts
    notes: str = ""


@dataclass(frozen=True)
class Tally:
    stored: int
    notified: int
    duplicated: int
    unexplained_duplicates: int
    open_deliveries: int
    copies: int  #: re-sent copies the hub recognised as an alarm it already had


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is truthy; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: The hub sends up to 64 messages at once; socketserver's default backlog of 5 would
    #: refuse connections, and the test would measure our receiver instead of the hub.
    request_queue_size = 128


class AlarmReceiver:
    """Every recipient's webhook (one URL path each) on one loopback HTTP server.

    Counts alarm messages per (path, alarm reference): ``delivered`` when it answered 2xx,
    ``refused`` otherwise. Set ``status`` to 503 to play a partner whose server is down, and
    ``delay`` to answer only after that many seconds (a slow partner: sends stay in flight).
    """

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.delivered: Counter[tuple[str, str]] = Counter()
        self.refused: Counter[tuple[str, str]] = Counter()
        self.other = 0  #: posts that are not an alarm's first message (reports to HQ)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status = receiver.record(self.path, self.rfile.read(length))
                time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        """The Apprise ``json://`` URL of the recipient at ``path``."""
        return f"json://127.0.0.1:{self.port}/{path}"

    def record(self, path: str, body: bytes) -> int:
        """Count one post; return the status to answer (decided under the same lock)."""
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        title = str(message.get("title", "")) if isinstance(message, dict) else ""
        text = str(message.get("message", "")) if isinstance(message, dict) else ""
        found = REFERENCE.search(text)
        with self._lock:
            status = self.status
            if found is None or not title.startswith(ALARM_TITLE_PREFIX):
                self.other += 1
            else:
                key = (path.strip("/"), found.group(1))
                (self.delivered if 200 <= status < 300 else self.refused)[key] += 1
        return status

    def counts(self) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
        """Copies of (delivered, refused) taken together."""
        with self._lock:
            return Counter(self.delivered), Counter(self.refused)

    def start(self) -> AlarmReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Site:
    """One deployment in ``workdir``: broker, hub child process, database, receiver.

    Register devices and recipients with :meth:`populate` before the broker starts (it
    reads the accounts when it starts). :meth:`close` stops everything it started.
    """

    def __init__(
        self, workdir: Path, database_url: str | None = None, redelivery_delay_s: float = 1.0
    ) -> None:
        self.workdir = workdir
        port = free_port()
        self.config_path = init_directory(workdir, port=port, http_port=free_port())
        self.database_url = database_url or f"sqlite:///{workdir / 'natalia.db'}"
        _configure(self.config_path, self.database_url, redelivery_delay_s, DELIVERY_TIMEOUT_S)
        self.broker = BrokerProcess(broker_settings(workdir / "broker", port))
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_log = workdir / "hub.log"
        #: contact id -> the receiver path of that recipient
        self.recipients: dict[int, str] = {}
        self.passwords: dict[str, str] = {}
        self._cleanup = contextlib.ExitStack()
        self.engine = make_engine(self.database_url)
        self._cleanup.callback(self.engine.dispose)
        self.receiver = AlarmReceiver().start()
        self._cleanup.callback(self.receiver.stop)
        self._cleanup.callback(self.broker.stop)
        self._cleanup.callback(self.stop_hub)

    def close(self) -> None:
        self._cleanup.close()

    # -- set-up -------------------------------------------------------------------------------

    def populate(
        self, device_ids: Collection[str], recipients: Collection[tuple[str, Role]]
    ) -> None:
        """One defender wearing ``device_ids``; every alarm goes to each of ``recipients``."""
        defender = admin.add_defender(self.engine, "Chaos Defender")
        assert defender.id is not None
        policy = self.workdir / "policy.toml"
        policy.write_text(POLICY)
        admin.set_policy(self.engine, "default", policy)
        registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
        for path, role in recipients:
            owner = None if role is Role.HQ else defender.id
            contact = admin.add_contact(
                self.engine, registry, path, self.receiver.url(path), owner, role=role
            )
            assert contact.id is not None
            self.recipients[contact.id] = path
        data_dir = self.broker.settings.data_dir
        for device_id in device_ids:
            creds = admin.add_device(self.engine, device_id, defender.id, data_dir)
            self.passwords[device_id] = creds.password

    def wristband(self, device_id: str) -> Wristband:
        """The reference client for ``device_id``, its state dir under the site (not started)."""
        return Wristband(
            device_id,
            self.passwords[device_id],
            host=self.broker.host,
            port=self.broker.port,
            state_dir=self.workdir / "wristbands" / device_id,
            resend_interval=RESEND_INTERVAL_S,
            max_reconnect_delay=2,
        )

    # -- processes ----------------------------------------------------------------------------

    def start_hub(self) -> None:
        ready = self.workdir / "hub.ready"
        ready.unlink(missing_ok=True)  # a killed hub leaves its ready file behind
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        with self.hub_log.open("ab") as log:
            self.hub = start_hub_process(
                self.config_path, ready, timeout=60, stdout=log, stderr=log, env=env
            )

    def kill_hub(self) -> None:
        """SIGKILL: no shutdown, no PUBACK for what it was storing, sends cut off mid-way."""
        if self.hub is not None:
            self.hub.kill()
            self.hub.wait()
            self.hub = None

    def stop_hub(self) -> None:
        if self.hub is not None:
            stop_process(self.hub)
            self.hub = None

    def hub_log_count(self, text: str) -> int:
        return self.hub_log.read_text(errors="replace").count(text) if self.hub_log.exists() else 0

    def wait_for_snapshot(self, after: float, timeout: float = 30.0) -> float:
        """Wait until Mosquitto writes its persistence snapshot after ``after`` (epoch seconds)."""
        path = self.broker.settings.data_dir / "mosquitto.db"
        written: list[float] = []

        def fresh() -> bool:
            with contextlib.suppress(FileNotFoundError):
                written.append(path.stat().st_mtime)
            return bool(written) and written[-1] > after

        if not wait_for(fresh, timeout, interval=0.02):
            raise RuntimeError(f"Mosquitto wrote no persistence snapshot within {timeout:g} s")
        return written[-1]

    # -- looking ------------------------------------------------------------------------------

    def sends_in_flight(self) -> set[Claim]:
        """Alarm deliveries marked ``sending``, with their attempt: what a crash now could
        send twice. A row a dead hub left ``sending`` keeps its attempt number until it is
        taken back, so the same claim seen at two kills is one claim."""
        with Session(self.engine) as session:
            query = select(Delivery.id, Delivery.attempts).where(
                Delivery.status == "sending", col(Delivery.alarm_pk).is_not(None)
            )
            return {(row_id, attempts) for row_id, attempts in session.exec(query) if row_id}

    def stored_count(self, sent: Collection[DeviceAlarm]) -> int:
        with Session(self.engine) as session:
            rows = session.exec(select(Alarm.device_id, Alarm.alarm_id)).all()
        return len(set(sent) & {(device, alarm) for device, alarm in rows})

    def device_seen(self, device_id: str) -> bool:
        with Session(self.engine) as session:
            device = session.get(Device, device_id)
            return device is not None and device.last_seen_at is not None

    def tally(self, sent: Collection[DeviceAlarm], in_flight: Collection[Claim] = ()) -> Tally:
        """Count ``sent`` alarms stored, notified and duplicated. ``in_flight``: the sends faults
        cut off; a row may bring its recipient one extra copy per such send."""
        cut_off = Counter(row_id for row_id, _ in in_flight)
        delivered, _ = self.receiver.counts()
        with Session(self.engine) as session:
            alarms = {(a.device_id, a.alarm_id): a for a in session.exec(select(Alarm))}
            rows = list(session.exec(select(Delivery).where(Delivery.kind == "alarm")))
        by_alarm: dict[int | None, dict[int | None, Delivery]] = {}
        for delivery in rows:
            by_alarm.setdefault(delivery.alarm_pk, {})[delivery.contact_id] = delivery
        stored = [alarms[key] for key in set(sent) if key in alarms]
        notified = duplicated = unexplained = 0
        for alarm in stored:
            own_rows = by_alarm.get(alarm.id, {})
            complete = True
            for contact_id, path in self.recipients.items():
                row = own_rows.get(contact_id)
                copies = delivered[(path, f"A{alarm.id}")]
                complete &= copies > 0 and row is not None and row.status == "sent"
                extra = max(0, copies - 1)
                duplicated += extra
                allowed = cut_off[row.id] if row is not None and row.id is not None else 0
                unexplained += max(0, extra - allowed)
            notified += complete
        stored_pks = {alarm.id for alarm in stored}
        open_rows = sum(1 for r in rows if r.alarm_pk in stored_pks and r.status in OPEN_STATUSES)
        copies_seen = sum(alarm.copies_received - 1 for alarm in stored)
        return Tally(len(stored), notified, duplicated, unexplained, open_rows, copies_seen)

    def settle(
        self, sent: Collection[DeviceAlarm], pending_on_devices: Callable[[], int], timeout: float
    ) -> bool:
        """Wait until every alarm is stored and acked and none of its deliveries is still open
        (sent, or failed for good); False after ``timeout``."""

        def settled() -> bool:
            tally = self.tally(sent)
            return (
                tally.stored == len(sent)
                and tally.open_deliveries == 0
                and pending_on_devices() == 0
            )

        return wait_for(settled, timeout, interval=0.5)

    def result(
        self,
        scenario: str,
        sent: Collection[DeviceAlarm],
        started: float,
        *,
        settled: bool,
        acked: int,
        faults: int,
        in_flight: Collection[Claim] = (),
        checks: dict[str, int] | None = None,
        notes: str = "",
    ) -> FaultResult:
        tally = self.tally(sent, in_flight)
        lost = (len(sent) - tally.stored) + (tally.stored - tally.notified)
        return FaultResult(
            scenario=scenario,
            sent=len(sent),
            stored=tally.stored,
            notified=tally.notified,
            duplicated=tally.duplicated,
            lost=lost,
            seconds=round(time.monotonic() - started, 1),
            acked=acked,
            faults=faults,
            duplicate_bound=len(in_flight),
            unexplained_duplicates=tally.unexplained_duplicates,
            checks={"copies": tally.copies, "settled": int(settled), **(checks or {})},
            notes=notes,
        )


@contextlib.contextmanager
def deployment(
    workdir: Path, database_url: str | None = None, redelivery_delay_s: float = 1.0
) -> Iterator[Site]:
    """A :class:`Site` in ``workdir`` (created), closed again whatever happens."""
    workdir.mkdir(parents=True, exist_ok=False)
    site = Site(workdir, database_url, redelivery_delay_s)
    try:
        yield site
    finally:
        site.close()


def _configure(
    config_path: Path, database_url: str, redelivery_delay_s: float, timeout_s: float
) -> None:
    """Point the ``natalia init`` config at ``database_url``; shorten the redelivery delay and
    the send timeout (and with it the lease on interrupted sends)."""
    text = config_path.read_text()
    replacements = {
        'url = "sqlite:///natalia.db"': f"url = {json.dumps(database_url)}",
        'data_dir = "broker"': f'data_dir = "broker"\nredelivery_delay_s = {redelivery_delay_s}',
        "timeout_s = 15": f"timeout_s = {timeout_s}",
    }
    for old, new in replacements.items():
        if old not in text:
            raise RuntimeError(
                f"{config_path} has no line {old!r}: the template in hub/setup.py changed; "
                "update hub/faults.py to match"
            )
        text = text.replace(old, new, 1)
    config_path.write_text(text)


def _started(stack: contextlib.ExitStack, bands: list[Wristband]) -> None:
    for band in bands:
        stack.callback(band.stop)
        band.start()
    for band in bands:
        band.wait_connected(30)


def _trigger(band: Wristband) -> DeviceAlarm:
    alarm = band.trigger(protocol.AlarmKind.PANIC, _POSITION, battery=80)
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
    devices: int = 4,
    alarms: int = 5,
    seed: int | None = None,
    timeout: float = 120.0,
) -> FaultResult:
    """``devices`` wristbands raise ``alarms`` each in a stream while the hub is killed with
    SIGKILL ``rounds`` times at random moments (up 0.2-2 s, down 0-1 s) and restarted.

    The recipients answer after ``SLOW_PARTNER_S``, so kills also land in the middle of sends.
    """
    rng = random.Random(seed)
    with deployment(workdir) as site, contextlib.ExitStack() as stack:
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
        settled = site.settle(sent, _pending(bands), timeout)
        return site.result(
            "hub-kill",
            sent,
            started,
            settled=settled,
            acked=_acked(bands, sent),
            faults=rounds,
            in_flight=in_flight,
            notes=(f"{rounds} x kill -9 of the hub; {len(in_flight)} sends in flight at the kills"),
        )


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
        _publish_once(site, probe, "status", protocol.Status(state="online").to_payload())
        site.start_hub()
        drained = wait_for(lambda: site.device_seen(probe), timeout)
        kept_by_broker = site.stored_count(sent)
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
    timeout: float = 120.0,
) -> FaultResult:
    """A scratch database on the PostgreSQL server of ``server_url`` refuses connections for
    ``outage_s`` seconds while ``devices`` wristbands raise ``alarms`` each."""
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
            during = [_trigger(band) for band in bands for _ in range(alarms)]
            refused = wait_for(lambda: site.hub_log_count("database error") > errors_before, 30)
            time.sleep(max(0.0, outage_s - (time.monotonic() - outage_started)))
            acked_while_down = _acked(bands, during)
            pending_while_down = len({a.alarm_id for b in bands for a in b.pending()})
            down_for = time.monotonic() - outage_started
        sent = before + during
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
                "acked_while_down": acked_while_down,
                "pending_while_down": pending_while_down,
                "storage_errors_seen": int(refused),
            },
            notes=(
                f"database refused connections for {down_for:.1f} s; {len(during)} alarms "
                f"raised meanwhile, {acked_while_down} acked while down, {pending_while_down} "
                "kept pending on the wristbands"
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
            outcome.acked.add(protocol.HubAck.model_validate_json(payload).alarm_id)
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
                position=_POSITION,
                battery=80,
            )
            outcome.alarms[device_id] = alarm.alarm_id
            payloads[device_id] = alarm.to_payload()
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


def _publish_once(site: Site, device_id: str, channel: str, payload: bytes) -> None:
    """Connect as ``device_id``, publish at QoS 1, wait for the broker's PUBACK, disconnect."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(device_id, site.passwords[device_id])
    client.connect(site.broker.host, site.broker.port)
    client.loop_start()
    try:
        client.publish(topic(device_id, channel), payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


# -- PostgreSQL ------------------------------------------------------------------------------


def _admin_connect(server_url: str) -> Any:
    import psycopg

    url = make_url(server_url)
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    )


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``, dropped afterwards; yields its URL.

    ``server_url`` is only used to connect (its database is never touched); its role needs
    CREATEDB.
    """
    name = f"natalia_chaos_{uuid.uuid4().hex[:10]}"
    with _admin_connect(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin_connect(server_url) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database_outage(server_url: str, database_url: str) -> Iterator[None]:
    """The database of ``database_url`` refuses new connections and loses its sessions; the
    server keeps running for everyone else. Connections are allowed again on exit."""
    name = make_url(database_url).database
    with _admin_connect(server_url) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    try:
        yield
    finally:
        with _admin_connect(server_url) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


SCENARIOS = ("hub-kill", "broker-kill", "db-down", "storm")

__all__ = [
    "SCENARIOS",
    "AlarmReceiver",
    "FaultResult",
    "Site",
    "database_outage",
    "deployment",
    "run_broker_kill",
    "run_db_down",
    "run_hub_kill",
    "run_storm",
    "scratch_database",
]
