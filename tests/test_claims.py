"""Several hubs on one PostgreSQL database never take the same delivery (FOR UPDATE SKIP LOCKED).

(SQLite has one writer: one hub per SQLite file, so this is PostgreSQL only.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from hub.clock import FakeClock
from hub.db import make_engine
from hub.models import Delivery
from hub.retry import RetryPolicy
from hub.store import Store

ROWS = 400
HUBS = 3
T = TypeVar("T")


@pytest.fixture
def engines(postgres_server_url: str) -> Iterator[list[Engine]]:
    """One engine (own connection pool) per hub, as separate processes would have."""
    made = [make_engine(postgres_server_url) for _ in range(HUBS)]
    yield made
    SQLModel.metadata.drop_all(made[0])
    for engine in made:
        engine.dispose()


def _outbox(engine: Engine, count: int) -> set[int]:
    with Session(engine) as session:
        rows = [
            Delivery(
                key=f"test:{n}",
                recipient=f"R{n}",
                channel_url="console://",
                channel_masked="console://",
                title="t",
                body="b",
                short="s",
            )
            for n in range(count)
        ]
        session.add_all(rows)
        session.commit()
        return {row.id for row in rows if row.id is not None}


def _side_by_side(work: list[Callable[[], T]]) -> list[T]:
    """Run every callable in its own thread, started together; their results in order."""
    start = threading.Barrier(len(work))
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = work[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return [results[i] for i in range(len(work))]


def test_concurrent_claims_are_disjoint_and_cover_every_pending_row(engines: list[Engine]) -> None:
    ids = _outbox(engines[0], ROWS)
    stores = [Store(engine) for engine in engines]

    def claim_all(store: Store) -> Callable[[], set[int]]:
        def claim() -> set[int]:
            taken: set[int] = set()
            while jobs := store.claim_pending(limit=7):
                taken |= {job.delivery_id for job in jobs}
            return taken

        return claim

    claimed = _side_by_side([claim_all(store) for store in stores])

    assert sum(len(c) for c in claimed) == ROWS  # nothing taken twice ...
    assert set().union(*claimed) == ids  # ... and nothing left behind
    assert all(claimed), "every hub should have got a share"
    with Session(engines[0]) as session:
        rows = session.exec(select(Delivery)).all()
        assert {(row.status, row.attempts) for row in rows} == {("sending", 1)}
        owners = {store.instance_id: c for store, c in zip(stores, claimed, strict=True)}
        assert all(row.id in owners[row.claimed_by or ""] for row in rows)


def test_concurrent_lease_checks_take_each_interrupted_row_back_once(
    engines: list[Engine],
) -> None:
    ids = _outbox(engines[0], 60)
    clock = FakeClock()
    policy = RetryPolicy(lease_s=10)
    crashed = Store(engines[0], clock=clock, retry=policy)
    while crashed.claim_pending():
        pass
    clock.advance(11)
    survivors = [Store(engine, clock=clock, retry=policy) for engine in engines]

    def requeue(store: Store) -> Callable[[], int]:
        return lambda: store.requeue_interrupted(lease=timedelta(seconds=10))

    counts = _side_by_side([requeue(store) for store in survivors])
    # SKIP LOCKED may skip a row another check is updating at that moment; the next round
    # (every dispatcher round checks leases) takes it. What must never happen is a row taken
    # back twice: the counts add up to the number of rows exactly.
    later = survivors[0].requeue_interrupted(lease=timedelta(seconds=10))

    assert sum(counts) + later == len(ids)
    with Session(engines[0]) as session:
        rows = session.exec(select(Delivery)).all()
        assert {(row.status, row.attempts, row.claimed_at) for row in rows} == {
            ("pending", 1, None)
        }
