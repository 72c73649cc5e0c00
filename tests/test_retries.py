"""Nothing lost: retries with backoff, fallback channels, the deadline, dead letters to HQ and
leases on interrupted sends — with the real Apprise notifier against a real HTTP receiver and a
real SMTP server, on SQLite and PostgreSQL, and a fake clock instead of waiting for backoffs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devicekit.protocol import Alarm as AlarmMessage
from hub import admin
from hub.clock import FakeClock
from hub.database import AsyncStore
from hub.db import make_engine
from hub.dispatch import Dispatcher
from hub.models import Delivery
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.retry import RetryPolicy
from hub.store import Store
from plugins.apprise_notifier import is_permanent
from tests.support.device import make_alarm
from tests.support.population import Population, populate
from tests.support.receivers import HTTPReceiver, SMTPReceiver

POLICY = RetryPolicy(
    max_attempts=5, backoff_base_s=2, backoff_cap_s=300, deadline_s=3600, lease_s=10
)
HQ_ADDRESS = "hq@example.org"


@dataclass
class World:
    clock: FakeClock
    store: Store
    db: AsyncStore
    dispatcher: Dispatcher
    registry: NotifierRegistry
    people: Population
    http: HTTPReceiver
    smtp: SMTPReceiver

    def webhook(self, path: str = "/alerts") -> str:
        return f"json://127.0.0.1:{self.http.port}{path}"

    def contact(self, name: str, url: str, fallback_urls: tuple[str, ...] = ()) -> None:
        admin.add_contact(
            self.store.engine,
            self.registry,
            name,
            url,
            self.people.defender_id,
            fallback_urls=fallback_urls,
        )

    def alarm(self, alarm_id: str = "al-1") -> int:
        message: AlarmMessage = make_alarm(alarm_id)
        return self.store.record_alarm(self.people.device_id, message).alarm_pk

    def round(self) -> int:
        """One dispatcher round, awaited to the end: how many sends it made."""
        return asyncio.run(self.dispatcher.run_once())

    def rows(self, recipient: str) -> list[Delivery]:
        return [d for d in self.store.deliveries() if d.recipient == recipient]

    def advance_to(self, moment: datetime | None) -> None:
        step = _aware(moment) - self.clock.now()
        self.clock.advance(0, microseconds=step // timedelta(microseconds=1))

    def mails_to(self, address: str) -> list[str]:
        return [str(m.message["Subject"]) for m in self.smtp.messages if address in m.rcpt_tos]


def _aware(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _world(
    database_url: str,
    tmp_path: Path,
    http: HTTPReceiver,
    smtp: SMTPReceiver,
    policy: RetryPolicy,
    hq_url: str | None = None,
) -> World:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    store = Store(make_engine(database_url), clock=clock, retry=policy)
    people = populate(
        store.engine,
        registry,
        tmp_path / "broker",
        contacts={},
        hq={"HQ": hq_url or smtp.url(HQ_ADDRESS)},
    )
    db = AsyncStore(store)

    async def notified(alarm_pk: int) -> None:
        return None

    dispatcher = Dispatcher(db, registry, 5.0, notified)
    return World(clock, store, db, dispatcher, registry, people, http, smtp)


@pytest.fixture
def world(
    database_url: str, tmp_path: Path, http_receiver: HTTPReceiver, smtp_server: SMTPReceiver
) -> Iterator[World]:
    made = _world(database_url, tmp_path, http_receiver, smtp_server, POLICY)
    yield made
    made.db.close()


def _retry_until_settled(world: World, recipient: str, rounds: int = 20) -> None:
    """Run rounds, moving the clock to each retry, until ``recipient`` has nothing left to do."""
    for _ in range(rounds):
        world.round()
        waiting = [d for d in world.rows(recipient) if d.status == "retrying"]
        if not waiting and all(d.status != "pending" for d in world.rows(recipient)):
            return
        if waiting:
            world.advance_to(waiting[0].next_try_at)
    raise AssertionError(f"{recipient} still has deliveries open after {rounds} rounds")


def test_server_errors_are_retried_on_the_same_channel_with_backoff(world: World) -> None:
    world.http.responses = [(500, b'{"error": "down"}')] * 3  # then the default: 200
    world.contact("Partner", world.webhook())
    alarm_pk = world.alarm()

    delays = []
    for attempt in (1, 2, 3):
        world.round()
        [row] = world.rows("Partner")
        assert (row.status, row.attempts) == ("retrying", attempt)
        assert "500" in row.detail
        next_try = _aware(row.next_try_at)
        delays.append((next_try - world.clock.now()).total_seconds())
        world.advance_to(next_try - timedelta(milliseconds=1))
        assert world.round() == 0  # not due yet: not claimed
        assert len(world.http.requests) == attempt
        world.advance_to(next_try)
    world.round()

    [row] = world.rows("Partner")
    assert (row.status, row.attempts, row.next_try_at) == ("sent", 4, None)
    assert len(world.http.requests) == 4
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(POLICY.backoff_cap_s, POLICY.backoff_base_s * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)
    kinds = [e.kind for e in world.store.events(alarm_pk) if "Partner" in e.detail]
    assert kinds == ["delivery_failed"] * 3 + ["delivered"]
    alarm = world.store.get_alarm(alarm_pk)
    assert alarm is not None and alarm.state == "notified"


def test_an_open_retry_holds_the_first_round_back(world: World) -> None:
    world.http.default = (503, b"{}")
    world.contact("Partner", world.webhook())
    alarm_pk = world.alarm()
    world.round()
    alarm = world.store.get_alarm(alarm_pk)
    assert alarm is not None and alarm.state == "received"  # HQ has it, Partner not yet


def test_a_client_error_goes_to_the_fallback_channel_at_once(world: World) -> None:
    world.http.default = (404, b'{"error": "no such number"}')
    world.contact(
        "Brother", world.webhook("/sms"), fallback_urls=(world.smtp.url("brother@example.org"),)
    )
    world.alarm()

    world.round()
    world.round()

    first, fallback = world.rows("Brother")
    assert (first.status, first.attempts, first.next_try_at) == ("failed", 1, None)
    assert "404" in first.detail
    assert (fallback.channel_index, fallback.status, fallback.attempts) == (1, "sent", 1)
    assert _aware(fallback.deadline_at) == _aware(first.deadline_at)  # one deadline per message
    assert len(world.http.requests) == 1
    assert len(world.mails_to("brother@example.org")) == 1


def test_a_transient_failure_past_max_attempts_goes_to_the_fallback(
    database_url: str, tmp_path: Path, http_receiver: HTTPReceiver, smtp_server: SMTPReceiver
) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_base_s=2, backoff_cap_s=300, lease_s=10)
    world = _world(database_url, tmp_path, http_receiver, smtp_server, policy)
    try:
        world.http.default = (500, b"{}")
        world.contact(
            "Brother", world.webhook("/sms"), fallback_urls=(smtp_server.url("bro@example.org"),)
        )
        alarm_pk = world.alarm()

        _retry_until_settled(world, "Brother")

        first, fallback = world.rows("Brother")
        assert (first.status, first.attempts) == ("failed", 3)
        assert (fallback.status, fallback.attempts) == ("sent", 1)
        assert len(world.http.requests) == 3
        assert len(world.mails_to("bro@example.org")) == 1
        [moved] = [e for e in world.store.events(alarm_pk) if "trying mailto" in e.detail]
        assert "gave up after 3 attempts" in moved.detail
    finally:
        world.db.close()


def test_the_last_channel_is_retried_past_max_attempts_until_it_recovers(
    database_url: str, tmp_path: Path, http_receiver: HTTPReceiver, smtp_server: SMTPReceiver
) -> None:
    # The lease is longer than any backoff here: the fake clock's jumps must not make this
    # hub's own finished claims look expired (a real clock moves less than a send timeout).
    policy = RetryPolicy(max_attempts=3, backoff_base_s=2, backoff_cap_s=300, lease_s=600)
    world = _world(database_url, tmp_path, http_receiver, smtp_server, policy)
    try:
        world.http.responses = [(503, b"{}")] * 6  # a long outage of the only channel
        world.contact("Partner", world.webhook())
        world.alarm()

        _retry_until_settled(world, "Partner")

        [row] = world.rows("Partner")
        assert (row.status, row.attempts) == ("sent", 7)  # not dead after 3 attempts
        assert len(world.http.requests) == 7
    finally:
        world.db.close()


def test_no_channel_left_is_a_dead_letter_reported_to_hq(world: World) -> None:
    world.http.default = (404, b"{}")
    world.contact("Partner", world.webhook())
    alarm_pk = world.alarm()

    world.round()  # Partner's only channel refuses: dead, HQ alert queued
    [dead] = world.rows("Partner")
    assert (dead.status, dead.attempts) == ("dead", 1)
    world.round()  # the alert reaches HQ

    alerts = [d for d in world.store.deliveries() if d.kind == "dead_letter"]
    assert [(d.recipient, d.status, d.alarm_pk) for d in alerts] == [("HQ", "sent", alarm_pk)]
    [subject] = [s for s in world.mails_to(HQ_ADDRESS) if "failed for good" in s]
    assert "Partner" in subject
    mail = next(m for m in world.smtp.messages if m.message["Subject"] == subject)
    assert f"alarm A{alarm_pk}" in mail.text and "404" in mail.text
    assert dead.channel_masked in mail.text
    assert "43.3178" not in mail.text  # no location in the alert
    [event] = [e for e in world.store.events(alarm_pk) if e.kind == "dead_letter"]
    assert "Partner" in event.detail and "HQ alerted (1)" in event.detail
    alarm = world.store.get_alarm(alarm_pk)
    assert alarm is not None and alarm.state == "notified"  # every message has its outcome


def test_a_dead_alert_to_hq_is_recorded_and_not_alerted_again(
    database_url: str, tmp_path: Path, http_receiver: HTTPReceiver, smtp_server: SMTPReceiver
) -> None:
    world = _world(
        database_url,
        tmp_path,
        http_receiver,
        smtp_server,
        POLICY,
        hq_url=f"json://127.0.0.1:{http_receiver.port}/hq",
    )
    try:
        world.http.default = (410, b"{}")  # HQ's and Partner's channels are both gone
        world.contact("Partner", world.webhook())
        alarm_pk = world.alarm()

        assert world.round() == 2  # HQ's and Partner's alarm messages: both dead
        assert world.round() == 2  # an alert to HQ about each: both dead, no further alert
        assert world.round() == 0
        rows = world.store.deliveries()
        assert sorted((d.kind, d.status) for d in rows) == [
            ("alarm", "dead"),
            ("alarm", "dead"),
            ("dead_letter", "dead"),
            ("dead_letter", "dead"),
        ]
        kinds = [e.kind for e in world.store.events(alarm_pk)]
        assert kinds.count("dead_letter") == 2
        assert kinds.count("dead_letter_alert_failed") == 2
    finally:
        world.db.close()


def test_the_deadline_dead_letters_though_attempts_remain(
    database_url: str, tmp_path: Path, http_receiver: HTTPReceiver, smtp_server: SMTPReceiver
) -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base_s=2, backoff_cap_s=300, deadline_s=5)
    world = _world(database_url, tmp_path, http_receiver, smtp_server, policy)
    try:
        world.http.default = (500, b"{}")
        world.contact("Partner", world.webhook())
        alarm_pk = world.alarm()

        _retry_until_settled(world, "Partner")

        [row] = world.rows("Partner")
        assert row.status == "dead" and 3 <= row.attempts < 10
        assert world.clock.now() == _aware(row.deadline_at)  # the last try was at the deadline
        [event] = [e for e in world.store.events(alarm_pk) if e.kind == "dead_letter"]
        assert "deadline passed" in event.detail
        assert len(world.http.requests) == row.attempts
    finally:
        world.db.close()


def test_after_an_outage_past_the_deadline_each_channel_still_gets_one_try(world: World) -> None:
    world.http.default = (502, b"{}")
    world.contact("Partner", world.webhook(), fallback_urls=(world.smtp.url("p@example.org"),))
    world.alarm()
    world.round()
    world.clock.advance(2 * 3600)  # the hub was down for two hours

    _retry_until_settled(world, "Partner")

    first, fallback = world.rows("Partner")
    assert (first.status, first.attempts) == ("failed", 2)  # one more try, then moved on
    assert (fallback.status, fallback.attempts) == ("sent", 1)


def test_a_crashed_senders_rows_come_back_a_live_peers_do_not(world: World) -> None:
    world.contact("Partner", world.webhook())
    alarm_pk = world.alarm("al-1")
    crashed = Store(world.store.engine, clock=world.clock, retry=POLICY)
    taken = {job.delivery_id for job in crashed.claim_pending()}  # then the process died
    assert world.store.requeue_interrupted() == 0  # the lease has not run out yet
    world.clock.advance(POLICY.lease_s + 1)
    world.alarm("al-2")
    peer = Store(world.store.engine, clock=world.clock, retry=POLICY)
    live = {job.delivery_id for job in peer.claim_pending()}  # a live peer, sending right now

    assert world.round() == len(taken)  # every round takes expired leases back, then sends

    by_id = {d.id: d for d in world.store.deliveries()}
    assert all((by_id[i].status, by_id[i].attempts) == ("sent", 2) for i in taken)
    assert {(by_id[i].status, by_id[i].claimed_by) for i in live} == {("sending", peer.instance_id)}
    interrupted = [e for e in world.store.events(alarm_pk) if "interrupted" in e.detail]
    assert len(interrupted) == len(taken)


def test_sends_interrupted_by_a_long_outage_are_tried_again_not_dead_lettered(
    world: World,
) -> None:
    world.contact("Partner", world.webhook())
    alarm_pk = world.alarm()
    crashed = Store(world.store.engine, clock=world.clock, retry=POLICY)
    taken = crashed.claim_pending()
    world.clock.advance(2 * 3600)  # down for longer than the deadline: outcome unknown

    assert world.round() == len(taken)

    rows = world.store.deliveries(alarm_pk)
    assert {(d.status, d.attempts) for d in rows} == {("sent", 2)}
    assert len(world.http.requests) == 1


def _interrupt_every_send(world: World, times: int) -> None:
    """``times`` hub stops, each in the middle of every send that is due: a hub claims them,
    dies, and the next one takes them back once the lease ran out."""
    for _ in range(times):
        Store(world.store.engine, clock=world.clock, retry=POLICY).claim_pending()
        world.clock.advance(POLICY.lease_s + 1)
        Store(world.store.engine, clock=world.clock, retry=POLICY).requeue_interrupted()


def test_sends_cut_off_by_six_hub_stops_use_no_attempts_and_are_delivered(world: World) -> None:
    world.contact("Partner", world.webhook())
    alarm_pk = world.alarm()
    _interrupt_every_send(world, 6)  # more than max_attempts (5), well within the deadline

    assert world.round() == 2  # HQ and Partner, each on its only channel

    rows = world.store.deliveries(alarm_pk)
    assert {(d.status, d.attempts, d.interrupted) for d in rows} == {("sent", 7, 6)}
    assert len(world.http.requests) == 1 and len(world.mails_to(HQ_ADDRESS)) == 1
    assert not [e for e in world.store.events(alarm_pk) if e.kind == "dead_letter"]


def test_a_send_that_keeps_stopping_its_hub_is_dead_lettered_after_the_deadline(
    world: World,
) -> None:
    world.contact("Partner", world.webhook())
    alarm_pk = world.alarm()
    _interrupt_every_send(world, 1)
    world.clock.advance(POLICY.deadline_s)  # ... and it kept happening until the deadline

    _interrupt_every_send(world, POLICY.max_attempts)

    partner = next(d for d in world.rows("Partner") if d.kind == "alarm")
    assert (partner.status, partner.attempts) == ("dead", POLICY.max_attempts)
    [event] = [
        e for e in world.store.events(alarm_pk) if e.kind == "dead_letter" and "Partner" in e.detail
    ]
    assert "deadline passed" in event.detail and "cut off by a hub stop" in event.detail


def test_a_clock_step_does_not_take_back_this_hubs_own_sends(world: World) -> None:
    world.alarm()
    jobs = world.store.claim_pending()
    world.clock.advance(24 * 3600)  # e.g. an NTP step, or a suspended VM

    assert world.store.requeue_interrupted() == 0

    restarted = Store(world.store.engine, clock=world.clock, retry=POLICY)
    assert restarted.requeue_interrupted() == len(jobs)  # another process: the lease counts


def test_a_result_after_the_lease_was_taken_back_is_recorded_not_lost(world: World) -> None:
    from hub.plugin_api import DeliveryResult

    alarm_pk = world.alarm()
    [job] = world.store.claim_pending()
    restarted = Store(world.store.engine, clock=world.clock, retry=POLICY)
    world.clock.advance(POLICY.lease_s + 1)
    assert restarted.requeue_interrupted() == 1  # sent again ...
    world.store.finish_delivery(job.delivery_id, DeliveryResult.success("late"), job.attempt)

    [row] = world.store.deliveries(alarm_pk)  # ... unless the late success arrives first
    assert (row.status, row.detail) == ("sent", "late")
    assert any("late result" in e.detail for e in world.store.events(alarm_pk))


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    policy = RetryPolicy(backoff_base_s=2, backoff_cap_s=30)
    assert [policy.ceiling(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert policy.ceiling(10_000) == 30
    for attempts in range(1, 8):
        for _ in range(50):
            assert (
                policy.ceiling(attempts) / 2 <= policy.backoff(attempts) <= policy.ceiling(attempts)
            )


@pytest.mark.parametrize(
    ("lines", "permanent"),
    [
        (["Failed to send JSON POST notification: Page not found., error=404."], True),
        (["Failed to send ntfy notification: Verification Failed., error=401."], True),
        (["Failed to send JSON POST notification: Internal server error., error=500."], False),
        (["Failed to send JSON POST notification: error=429."], False),
        (["Failed to send JSON POST notification: error=408."], False),
        (["A Connection error occurred sending JSON notification to 127.0.0.1."], False),
        (["Failed to send to A: error=404.", "A Connection error occurred sending to B."], False),
        (["Failed to send to A: error=404.", "Failed to send to B: error=503."], False),
        ([], False),
    ],
)
def test_apprise_failures_are_permanent_only_for_client_errors(
    lines: list[str], permanent: bool
) -> None:
    assert is_permanent(lines) is permanent
