"""The deployment the fault scenarios run against: a site with its own broker and hub, and the
receiver that counts what recipients got (see ``hub.faults``)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from broker.launcher import BrokerProcess, free_port
from devicekit import protocol
from devicekit.wristband import Wristband
from hub import admin
from hub.config import load_config
from hub.db import engine_for
from hub.demo import start_hub_process, stop_process
from hub.models import OPEN_STATUSES, Alarm, Delivery, Device, Role
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.setup import allow_loopback, broker_settings, init_directory

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
ALARM_POSITION = protocol.Position(
    lat=59.32932, lon=18.06858, accuracy_m=9.0, fix_ts=protocol.utcnow()
)

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
        self,
        workdir: Path,
        database_url: str | None = None,
        redelivery_delay_s: float = 1.0,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
    ) -> None:
        self.workdir = workdir
        port = free_port()
        self.config_path = init_directory(workdir, port=port, http_port=free_port())
        allow_loopback(self.config_path)  # the receiver standing in for every recipient
        self.database_url = database_url or f"sqlite:///{workdir / 'natalia.db'}"
        _configure(self.config_path, self.database_url, redelivery_delay_s, delivery_timeout_s)
        self.broker = BrokerProcess(broker_settings(workdir / "broker", port))
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_log = workdir / "hub.log"
        #: contact id -> the receiver path of that recipient
        self.recipients: dict[int, str] = {}
        self.passwords: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self._cleanup = contextlib.ExitStack()
        self.engine = engine_for(load_config(self.config_path))  # its keys, its database
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
            self.keys[device_id] = creds.key

    def wristband(self, device_id: str) -> Wristband:
        """The reference client for ``device_id``, its state dir under the site (not started)."""
        return Wristband(
            device_id,
            self.passwords[device_id],
            key=self.keys[device_id],
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
