"""The webhooks' database side on real SQLite and PostgreSQL: fan-out from cursors, two hubs at
once, rows committed out of order, claims, leases and late results."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from hub.clock import FakeClock, SystemClock
from hub.db import make_engine
from hub.models import AlarmEvent
from hub.outside_ids import outside_ids
from hub.retry import RetryPolicy
from hub.tail import Settler
from hub.webhooks import subscriptions
from hub.webhooks.fanout import Fanout
from hub.webhooks.outbox import Outcome, WebhookOutbox
from hub.webhooks.sources import SOURCES, SourceEvent, TableSource
from hub.webhooks.tables import WebhookCursor, WebhookDelivery, WebhookSubscription
from tests.support.live import add_events, alarm_row

POLICY = RetryPolicy(max_attempts=3, backoff_base_s=1, backoff_cap_s=10, deadline_s=600, lease_s=20)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres(postgres_server_url: str) -> Iterator[str]:
    """PostgreSQL only: what several hubs on one database rely on (SQLite runs one hub)."""
    yield postgres_server_url
    engine = make_engine(postgres_server_url)
    SQLModel.metadata.drop_all(engine)
    engine.dispose()


def subscribe(engine: Engine, events: list[str] | None = None) -> int:
    with Session(engine) as session:
        row, _ = subscriptions.create(
            session, "https://partner.example.org/h", events or ["*"], "", "test"
        )
        assert row.id is not None
        return row.id


def delivered_events(engine: Engine, webhook_id: int) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(
            select(WebhookDelivery.event_id)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(col(WebhookDelivery.id))
        ).all()
        return list(rows)


def sent_as(engine: Engine, rows: list[int]) -> list[str]:
    """The webhook event ids of these alarm events: their ids as shown outside HQ."""
    ids = outside_ids(engine).events
    return [f"alarm_event.{ids.shown(row)}" for row in rows]


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads that start together; their results, in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_new_subscription_gets_the_events_from_now_on(engine: Engine) -> None:
    alarm_id = alarm_row(engine)
    add_events(engine, alarm_id, 5)  # history: not sent
    webhook_id = subscribe(engine)
    fanout = Fanout(engine, SystemClock())
    assert fanout.fan_out() == 0
    new = add_events(engine, alarm_id, 3)
    assert fanout.fan_out() == 3
    assert fanout.fan_out() == 0
    assert delivered_events(engine, webhook_id) == sent_as(engine, new)


def test_two_hubs_fanning_out_together_create_each_delivery_once(
    engine: Engine, database_url: str
) -> None:
    alarm_id = alarm_row(engine)
    webhook_id = subscribe(engine)
    made = add_events(engine, alarm_id, 40)
    other = make_engine(database_url)
    try:
        hubs = [Fanout(engine, SystemClock()), Fanout(other, SystemClock())]
        for _ in range(3):
            at_once(*(hub.fan_out for hub in hubs))
    finally:
        other.dispose()
    assert delivered_events(engine, webhook_id) == sent_as(engine, made)
    with Session(engine) as session:
        cursor = session.get(WebhookCursor, (webhook_id, "alarm"))
        assert cursor is not None and cursor.position == made[-1]


def test_a_source_added_later_starts_at_its_end_for_existing_subscriptions(engine: Engine) -> None:
    alarm_id = alarm_row(engine)
    webhook_id = subscribe(engine, ["*"])
    old = add_events(engine, alarm_id, 4)

    def as_timeline(session: Session, row: AlarmEvent) -> SourceEvent:
        assert row.id is not None
        return SourceEvent(row.id, f"timeline.{row.id}", f"timeline.{row.kind}", row.at, {})

    timeline = TableSource("timeline", AlarmEvent, AlarmEvent.id, as_timeline)
    fanout = Fanout(engine, SystemClock(), sources=[*SOURCES, timeline])
    assert fanout.fan_out() == 4  # the alarm source's; the new source does not replay history
    new = add_events(engine, alarm_id, 2)
    assert fanout.fan_out() == 4
    sent = delivered_events(engine, webhook_id)
    assert [e for e in sent if e.startswith("timeline.")] == [f"timeline.{i}" for i in new]
    assert [e for e in sent if e.startswith("alarm_event.")] == sent_as(engine, old + new)


def test_deleting_cancels_what_waits_and_leaves_the_rest(engine: Engine) -> None:
    webhook_id = subscribe(engine)
    statuses = ["pending", "retrying", "sending", "delivered", "dead"]
    with Session(engine) as session:
        for index, status in enumerate(statuses):
            session.add(
                WebhookDelivery(
                    webhook_id=webhook_id,
                    event_id=f"e{index}",
                    event_type="t",
                    body="{}",
                    status=status,
                )
            )
        session.commit()
        hook = session.get(WebhookSubscription, webhook_id)
        assert hook is not None
        assert subscriptions.deactivate(session, hook, "deleted by test", SystemClock().now()) == 2
        session.commit()
        after = session.exec(select(WebhookDelivery.status).order_by(col(WebhookDelivery.id))).all()
    assert list(after) == ["cancelled", "cancelled", "sending", "delivered", "dead"]


def _deliveries(engine: Engine, webhook_id: int, count: int) -> None:
    with Session(engine) as session:
        for index in range(count):
            session.add(
                WebhookDelivery(
                    webhook_id=webhook_id, event_id=f"e{index}", event_type="t", body="{}"
                )
            )
        session.commit()


def test_a_late_success_still_counts_but_a_late_failure_changes_nothing(engine: Engine) -> None:
    webhook_id = subscribe(engine)
    _deliveries(engine, webhook_id, 2)
    clock = FakeClock()
    stopped = WebhookOutbox(engine, clock, POLICY, "hub-a")
    survivor = WebhookOutbox(engine, clock, POLICY, "hub-b")
    first, second = stopped.claim(10, 10, {})
    clock.advance(POLICY.lease_s + 1)
    assert survivor.requeue_interrupted(frozenset()) == 2
    assert stopped.finish(first, Outcome(True, 204, "HTTP 204 No Content")) == "delivered"
    assert stopped.finish(second, Outcome(False, 500, "HTTP 500")) == "pending"
    [again] = survivor.claim(10, 10, {})
    assert (again.delivery_id, again.attempt) == (second.delivery_id, 2)


def test_failures_back_off_then_die_and_unsent_claims_are_released(engine: Engine) -> None:
    webhook_id = subscribe(engine)
    _deliveries(engine, webhook_id, 2)
    clock = FakeClock()
    outbox = WebhookOutbox(engine, clock, POLICY, "hub-a")
    job, unsent = outbox.claim(10, 10, {})
    for attempt in range(1, 4):
        assert job.attempt == attempt
        status = outbox.finish(job, Outcome(False, None, "timed out after 10 s"))
        if attempt < 3:
            assert status == "retrying" and outbox.claim(10, 10, {}) == []  # not before its time
            clock.advance(POLICY.backoff_cap_s)
            [job] = outbox.claim(10, 10, {})
    assert status == "dead"
    assert outbox.release_unsent() == 1
    with Session(engine) as session:
        dead = session.get(WebhookDelivery, job.delivery_id)
        released = session.get(WebhookDelivery, unsent.delivery_id)
        assert dead is not None and released is not None
        assert "gave up after 3 attempts" in dead.detail and dead.body == ""
        assert (released.status, released.attempts) == ("pending", 0)


def test_two_hubs_never_claim_the_same_delivery(postgres: str) -> None:
    engines = [make_engine(postgres), make_engine(postgres)]
    try:
        webhook_id = subscribe(engines[0])
        _deliveries(engines[0], webhook_id, 60)
        hubs = [WebhookOutbox(e, SystemClock(), POLICY, f"hub-{i}") for i, e in enumerate(engines)]
        claimed = at_once(*(lambda hub=hub: hub.claim(60, 60, {}) for hub in hubs))
    finally:
        for engine in engines:
            engine.dispose()
    ids = [job.delivery_id for jobs in claimed for job in jobs]
    assert len(ids) == len(set(ids)) == 60


def test_an_event_committed_late_is_waited_for_and_a_rolled_back_one_stepped_over(
    postgres: str,
) -> None:
    engine = make_engine(postgres)
    try:
        alarm_id = alarm_row(engine)
        webhook_id = subscribe(engine)
        now = [0.0]
        fanout = Fanout(
            engine, SystemClock(), settler=lambda: Settler(grace_s=5, clock=lambda: now[0])
        )
        with Session(engine) as slow:
            slow.add(AlarmEvent(alarm_pk=alarm_id, kind="slow"))
            slow.flush()  # has its id; not committed yet
            [fast] = add_events(engine, alarm_id, 1, kind="fast")
            assert fanout.fan_out() == 0  # the fast one waits for the slow one
            slow.commit()
        assert fanout.fan_out() == 2
        with Session(engine) as doomed:
            doomed.add(AlarmEvent(alarm_pk=alarm_id, kind="doomed"))
            doomed.flush()
            doomed.rollback()
        [after] = add_events(engine, alarm_id, 1, kind="after")
        assert fanout.fan_out() == 0
        now[0] = 5.0
        assert fanout.fan_out() == 1
        assert delivered_events(engine, webhook_id) == sent_as(engine, [fast - 1, fast, after])
    finally:
        engine.dispose()
