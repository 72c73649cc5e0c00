"""Sending webhooks, the database side: claim due deliveries, record results, take back what a
stopped hub left half-sent. Synchronous; ``hub.webhooks.sender`` runs it on its own thread.

A delivery's states (``hub.webhooks.tables.WebhookDeliveryStatus``)::

    pending/retrying --claim--> sending --2xx--> delivered
    sending --any other answer, a timeout, a connection error--> retrying (next_try_at)
            ... until max_attempts or the deadline --> dead
    sending --410 Gone--> dead, and the subscription is deactivated (the receiver is gone)
    sending --lease ran out (its hub stopped)--> pending: sent again (at-least-once)
    pending/retrying --webhook deleted--> cancelled

Backoff is ``hub.retry``'s: exponential with equal jitter. Receivers de-duplicate on the event
id, which is the same on every attempt. Several hubs on one PostgreSQL claim with
``FOR UPDATE SKIP LOCKED`` under a lease, like the notifier outbox (``hub.deliveries``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from hub.clock import Clock
from hub.retry import RetryPolicy
from hub.webhooks import subscriptions
from hub.webhooks.sources import aware
from hub.webhooks.tables import CLAIMABLE, WebhookDelivery, WebhookDeliveryStatus
from hub.webhooks.tables import WebhookSubscription as Subscription

log = logging.getLogger(__name__)

Status = WebhookDeliveryStatus


@dataclass(frozen=True)
class WebhookJob:
    delivery_id: int
    attempt: int  #: the row's ``attempts`` when claimed: identifies this claim
    webhook_id: int
    url: str
    secret: str
    body: bytes
    event_id: str
    event_type: str


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None  #: the HTTP status, None when there was no answer
    detail: str


class WebhookOutbox:
    def __init__(self, engine: Engine, clock: Clock, policy: RetryPolicy, instance_id: str) -> None:
        self.engine = engine
        self.clock = clock
        self.policy = policy
        self.instance_id = instance_id
        self._turn = 0

    def claim(self, room: int, per_webhook: int, busy: Mapping[int, int]) -> list[WebhookJob]:
        """Mark up to ``room`` due deliveries as sending, at most ``per_webhook`` in flight per
        subscription (``busy``: in flight now), taking subscriptions in turn."""
        now = self.clock.now()
        jobs: list[WebhookJob] = []
        with Session(self.engine) as session:
            hooks = session.exec(
                select(Subscription).where(col(Subscription.active)).order_by(col(Subscription.id))
            ).all()
            self._turn = (self._turn + 1) % max(len(hooks), 1)
            for hook in [*hooks[self._turn :], *hooks[: self._turn]]:
                take = min(per_webhook - busy.get(hook.id or 0, 0), room - len(jobs))
                if take <= 0:
                    continue
                rows = session.exec(
                    select(WebhookDelivery)
                    .where(
                        WebhookDelivery.webhook_id == hook.id,
                        col(WebhookDelivery.status).in_(CLAIMABLE),
                        or_(
                            col(WebhookDelivery.next_try_at).is_(None),
                            col(WebhookDelivery.next_try_at) <= now,
                        ),
                    )
                    .order_by(col(WebhookDelivery.id))
                    .limit(take)
                    .with_for_update(skip_locked=True)
                ).all()
                for row in rows:
                    assert row.id is not None
                    row.status = Status.SENDING.value
                    row.attempts += 1
                    row.claimed_at = now
                    row.claimed_by = self.instance_id
                    row.next_try_at = None
                    row.deadline_at = row.deadline_at or self.policy.deadline_from(now)
                    session.add(row)
                    jobs.append(
                        WebhookJob(
                            row.id,
                            row.attempts,
                            row.webhook_id,
                            hook.url,
                            hook.secret,
                            row.body.encode(),
                            row.event_id,
                            row.event_type,
                        )
                    )
            session.commit()
        return jobs

    def finish(self, job: WebhookJob, outcome: Outcome) -> str:
        """Record one attempt; returns the delivery's status after it."""
        now = self.clock.now()
        with Session(self.engine) as session:
            row = session.exec(
                select(WebhookDelivery)
                .where(WebhookDelivery.id == job.delivery_id)
                .with_for_update()
            ).one()
            hook = session.get(Subscription, row.webhook_id)
            assert hook is not None
            mine = (
                row.status == Status.SENDING.value
                and row.attempts == job.attempt
                and row.claimed_by == self.instance_id
            )
            if not mine:  # the lease ran out meanwhile: a success still counts, nothing else
                log.warning("late result for webhook delivery %s, now %s", row.id, row.status)
                if outcome.ok and row.status in CLAIMABLE:
                    self._record(row, outcome, now)
                    _finalise(row, Status.DELIVERED, now)
            else:
                self._record(row, outcome, now)
                if outcome.ok:
                    _finalise(row, Status.DELIVERED, now)
                elif outcome.status == 410:
                    _finalise(row, Status.DEAD, now, "the receiver is gone; webhook deactivated")
                    subscriptions.deactivate(session, hook, "the receiver answered 410 Gone", now)
                elif not hook.active:
                    _finalise(row, Status.CANCELLED, now, "the webhook was deleted")
                else:
                    self._after_failure(row, now)
            session.add(row)
            session.commit()
            return row.status

    def requeue_interrupted(self, in_flight: Collection[int]) -> int:
        """Send again what a stopped hub left ``sending`` once its lease ran out (this hub's own
        sends in flight excepted); returns how many."""
        now = self.clock.now()
        cutoff = now - self.policy.lease
        with Session(self.engine) as session:
            rows = session.exec(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.status == Status.SENDING.value,
                    or_(
                        col(WebhookDelivery.claimed_at).is_(None),
                        col(WebhookDelivery.claimed_at) <= cutoff,
                    ),
                )
                .with_for_update(skip_locked=True)
            ).all()
            rows = [
                row
                for row in rows
                if not (row.claimed_by == self.instance_id and row.id in in_flight)
            ]
            for row in rows:
                row.claimed_at = None
                row.detail = f"interrupted: hub {row.claimed_by or '?'} stopped while sending"
                deadline = aware(row.deadline_at) if row.deadline_at else None
                decision = self.policy.after_interruption(row.attempts, now, deadline)
                if decision.retry_at is None:
                    _finalise(row, Status.DEAD, now, decision.reason)
                else:
                    row.status = Status.PENDING.value
                session.add(row)
            session.commit()
            return len(rows)

    def release_unsent(self) -> int:
        """On shutdown, after the sends in flight finished: rows this hub claimed but never
        sent go back to ``pending`` at once, instead of waiting out their lease."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(WebhookDelivery).where(
                    WebhookDelivery.status == Status.SENDING.value,
                    WebhookDelivery.claimed_by == self.instance_id,
                )
            ).all()
            for row in rows:
                row.status = Status.PENDING.value
                row.attempts = max(row.attempts - 1, 0)
                row.claimed_at = None
                session.add(row)
            session.commit()
            return len(rows)

    def _record(self, row: WebhookDelivery, outcome: Outcome, now: Any) -> None:
        row.response_status = outcome.status
        row.detail = outcome.detail[:1000]
        row.claimed_at = None

    def _after_failure(self, row: WebhookDelivery, now: Any) -> None:
        deadline = aware(row.deadline_at) if row.deadline_at else self.policy.deadline_from(now)
        decision = self.policy.after_failure(row.attempts, False, now, deadline)
        if decision.retry_at is None:
            _finalise(row, Status.DEAD, now, decision.reason)
            return
        row.status = Status.RETRYING.value
        row.next_try_at = decision.retry_at
        wait = max((decision.retry_at - now) / timedelta(seconds=1), 0)
        row.detail = (
            f"{row.detail}; attempt {row.attempts + 1} of {self.policy.max_attempts} "
            f"in {wait:.0f} s"
        )[:1000]


def _finalise(row: WebhookDelivery, status: Status, now: Any, why: str = "") -> None:
    row.status = status.value
    row.next_try_at = None
    row.claimed_at = None
    if status == Status.DELIVERED:
        row.delivered_at = now
    if why:
        row.detail = f"{row.detail}; {why}" if row.detail else why
        row.detail = row.detail[:1000]
    row.body = ""  # it holds positions: kept only while it may still be sent
