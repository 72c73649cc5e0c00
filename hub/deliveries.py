"""The outbox side of the store: claiming deliveries, recording results, retries and leases.

Several hubs may share a PostgreSQL database: rows are claimed with ``FOR UPDATE SKIP LOCKED``
under a lease (``claimed_at``/``claimed_by``), so no delivery is sent twice at the same time and a
crashed hub's sends come back after the lease. SQLite has one writer: one hub per database file.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select, update

from devicekit import protocol
from devicekit.protocol import AckStage
from hub.clock import Clock, stored_utc
from hub.deadletter import DEAD_LETTER_KIND, dead_letter, short_reference
from hub.lifecycle import device_ack
from hub.models import (
    CLAIMABLE_STATUSES,
    OPEN_STATUSES,
    Alarm,
    AlarmEvent,
    AlarmState,
    Delivery,
    DeliveryStatus,
)
from hub.outbox import (
    cancel,
    cancel_open_deliveries,
    failed_attempts,
    has_next_channel,
    queue_fallback,
)
from hub.outside_ids import Ids, outside_ids
from hub.plugin_api import DeliveryResult, Notification
from hub.recipients import recipient_stopped
from hub.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryJob:
    delivery_id: int
    alarm_pk: int | None
    notification: Notification
    #: The row's ``attempts`` when claimed: identifies this claim in ``finish_delivery``.
    attempt: int | None = None


def new_instance_id() -> str:
    """This hub process, as written into ``Delivery.claimed_by``."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


class DeliveryStore:
    """Mixed into :class:`hub.store.Store`, which sets these attributes."""

    engine: Engine
    clock: Clock
    retry: RetryPolicy
    instance_id: str
    _in_flight: set[int]

    # -- dispatch -----------------------------------------------------------------------------
    #
    # A delivery's states (hub.models.DeliveryStatus):
    #   pending/retrying --claim--> sending --ok--> sent
    #   sending --transient failure, attempts and deadline left--> retrying (next_try_at)
    #   sending --permanent, or attempts/deadline used up--> failed (+ next channel) | dead
    #   sending --claim older than the lease (its hub stopped)--> pending | failed | dead
    # PostgreSQL: claims lock with FOR UPDATE SKIP LOCKED, so several hubs never take one row.
    # SQLite has one writer: run one hub per SQLite file.

    def requeue_interrupted(self, lease: timedelta | None = None) -> int:
        """Send again what a stopped hub left ``sending`` (at-least-once); returns how many.

        Only rows claimed longer than ``lease`` (default: the policy's, twice the send timeout)
        ago: a live hub cuts every send off after the timeout, so its rows are younger and are
        left alone (hubs' clocks must agree to well within the lease: NTP). This hub's own sends
        in flight are never taken back. An interrupted send is not a failure of the channel: it
        goes again at once without using up an attempt, until the message's deadline (see
        ``RetryPolicy.after_interruption``). Called at start-up and before every claim round.
        """
        now = self.clock.now()
        cutoff = now - (self.retry.lease if lease is None else lease)
        with Session(self.engine) as session:
            rows = session.exec(
                select(Delivery)
                .where(
                    Delivery.status == DeliveryStatus.SENDING.value,
                    or_(col(Delivery.claimed_at).is_(None), col(Delivery.claimed_at) <= cutoff),
                )
                .order_by(col(Delivery.id))
                .with_for_update(skip_locked=True)
            ).all()
            rows = [row for row in rows if not self._sending_here(row)]
            alarms = set()
            for row in rows:
                since = stored_utc(row.claimed_at)
                row.detail = (
                    f"interrupted: hub {row.claimed_by or '?'} stopped while sending"
                    + (f" (claimed {since.isoformat(timespec='seconds')})" if since else "")
                )[:1000]
                row.finished_at = now
                row.interrupted += 1
                self._after_failure(session, row, False, now, resend_now=True)
                if row.alarm_pk is not None:
                    alarms.add(row.alarm_pk)
            session.flush()
            for alarm_pk in sorted(alarms):
                complete_first_round(session, alarm_pk, now)
            session.commit()
            return len(rows)

    def claim_pending(self, limit: int = 100) -> list[DeliveryJob]:
        """Mark up to ``limit`` deliveries that are due as sending (by this hub) and return them.

        Due: ``pending``, or ``retrying`` whose ``next_try_at`` has come. The first claim of a
        message starts its deadline. A row whose recipient was deactivated or deleted since it
        was queued is cancelled instead (``hub.recipients.recipient_stopped``).
        """
        now = self.clock.now()
        # Read (or made) before the claim's transaction, whose write lock would hold up making
        # it (SQLite): plugins are given the delivery's id as outsiders see it (hub.outside_ids).
        ids = outside_ids(self.engine).deliveries
        with Session(self.engine) as session:
            rows = session.exec(
                select(Delivery)
                .where(
                    col(Delivery.status).in_(CLAIMABLE_STATUSES),
                    or_(col(Delivery.next_try_at).is_(None), col(Delivery.next_try_at) <= now),
                )
                .order_by(col(Delivery.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            jobs = []
            cancelled: set[int] = set()
            for row in rows:
                if (stopped := recipient_stopped(session, row)) is not None:
                    cancel(session, row, stopped, now)
                    if row.alarm_pk is not None:
                        cancelled.add(row.alarm_pk)
                    continue
                row.status = DeliveryStatus.SENDING.value
                row.attempts += 1
                row.claimed_at = now
                row.claimed_by = self.instance_id
                row.next_try_at = None
                if row.deadline_at is None:
                    row.deadline_at = self.retry.deadline_from(now)
                session.add(row)
                assert row.id is not None
                notification = _notification(row, self._is_test(session, row), ids)
                jobs.append(DeliveryJob(row.id, row.alarm_pk, notification, row.attempts))
            session.flush()
            for alarm_pk in sorted(cancelled):  # a cancel may end the first round
                complete_first_round(session, alarm_pk, now)
            session.commit()
            self._in_flight.update(job.delivery_id for job in jobs)
            return jobs

    def finish_delivery(
        self, delivery_id: int, result: DeliveryResult, attempt: int | None = None
    ) -> bool:
        """Record one attempt's result: sent, a retry later, the next channel, or dead letter.

        ``attempt`` (from the job) makes sure the row is still this hub's claim; a result that
        comes after the lease expired is recorded as an event and changes nothing else (unless
        it is a success for a row waiting to be sent again: then that row is sent).
        Returns True when this completed the alarm's first round (the device is told "notified").
        """
        now = self.clock.now()
        self._in_flight.discard(delivery_id)  # not recorded (database down): the lease applies
        with Session(self.engine) as session:
            row = session.exec(
                select(Delivery).where(Delivery.id == delivery_id).with_for_update()
            ).one()
            if not self._holds_claim(row, attempt):
                completed = self._late_result(session, row, result, attempt, now)
                session.commit()
                return completed
            row.detail = result.detail[:1000]
            row.finished_at = now
            row.claimed_at = None
            if result.ok:
                row.status = DeliveryStatus.SENT.value
                text = f"{row.recipient} via {row.channel_masked}: {row.detail}".strip()
                _delivery_event(session, row, "delivered", text, now)
                # The channel works again: what waits for a retry on it goes now, not after
                # its backoff (after a long outage that could be minutes).
                session.execute(
                    update(Delivery)
                    .where(
                        col(Delivery.status) == DeliveryStatus.RETRYING.value,
                        col(Delivery.channel_url) == row.channel_url,
                        col(Delivery.next_try_at) > now,
                    )
                    .values(next_try_at=now)
                )
            else:
                self._after_failure(session, row, result.permanent, now)
            session.add(row)
            completed = False
            if row.alarm_pk is not None:
                session.flush()
                completed = complete_first_round(session, row.alarm_pk, now)
            session.commit()
            return completed

    def _sending_here(self, row: Delivery) -> bool:
        return row.claimed_by == self.instance_id and row.id in self._in_flight

    def _holds_claim(self, row: Delivery, attempt: int | None) -> bool:
        if row.status != DeliveryStatus.SENDING.value:
            return False
        return attempt is None or (row.attempts == attempt and row.claimed_by == self.instance_id)

    def _late_result(
        self,
        session: Session,
        row: Delivery,
        result: DeliveryResult,
        attempt: int | None,
        now: datetime,
    ) -> bool:
        """A result for a claim this hub no longer holds: recorded, and used only if it helps."""
        text = (
            f"{row.recipient} via {row.channel_masked}: {result.detail[:500]} "
            f"(late result of attempt {attempt}; the row is {row.status} now)"
        )
        log.warning("late result for delivery %s, now %s", row.id, row.status)
        if result.ok and row.status in CLAIMABLE_STATUSES:
            row.status = DeliveryStatus.SENT.value
            row.detail = result.detail[:1000]
            row.finished_at = now
            row.next_try_at = None
            session.add(row)
        _delivery_event(session, row, "delivered" if result.ok else "delivery_failed", text, now)
        if row.alarm_pk is None:
            return False
        session.flush()
        return complete_first_round(session, row.alarm_pk, now)

    def _after_failure(
        self,
        session: Session,
        row: Delivery,
        permanent: bool,
        now: datetime,
        resend_now: bool = False,
    ) -> None:
        """Retry the channel later (or now, after an interruption: ``resend_now``), go to the
        next one, or dead letter. Interrupted sends are not counted as the channel's attempts."""
        if (stopped := recipient_stopped(session, row)) is not None:
            cancel(session, row, stopped, now)  # no retry, no fallback, no dead letter
            return
        deadline = stored_utc(row.deadline_at) or self.retry.deadline_from(
            stored_utc(row.created_at) or now
        )
        failed = failed_attempts(row)
        if resend_now:
            decision = self.retry.after_interruption(row.attempts, now, deadline)
        else:
            decision = self.retry.after_failure(
                failed, permanent, now, deadline, last_channel=not has_next_channel(session, row)
            )
        text = f"{row.recipient} via {row.channel_masked}: {row.detail}".strip()
        row.claimed_at = None
        if decision.retry_at is not None:
            row.status = (DeliveryStatus.PENDING if resend_now else DeliveryStatus.RETRYING).value
            row.next_try_at = None if resend_now else decision.retry_at
            if resend_now:
                text += f"; sent again at once ({failed} failed attempt(s) so far)"
            else:
                wait = (decision.retry_at - now).total_seconds()
                text += f"; attempt {failed + 1} of {self.retry.max_attempts} in {wait:.0f} s"
            session.add(row)
            _delivery_event(session, row, "delivery_failed", text, now)
            return
        row.next_try_at = None
        fallback = queue_fallback(session, row, now)
        if fallback is not None:
            row.status = DeliveryStatus.FAILED.value
            text += f"; {decision.reason}; trying {fallback.channel_masked}"
            session.add(row)
            _delivery_event(session, row, "delivery_failed", text, now)
            return
        row.status = DeliveryStatus.DEAD.value
        session.add(row)
        _delivery_event(session, row, "delivery_failed", f"{text}; {decision.reason}", now)
        dead_letter(session, row, decision.reason, now)

    @staticmethod
    def _is_test(session: Session, row: Delivery) -> bool:
        if row.alarm_pk is None:
            return False
        alarm = session.get(Alarm, row.alarm_pk)
        return alarm is not None and alarm.kind == protocol.AlarmKind.TEST.value


def complete_first_round(session: Session, alarm_pk: int, now: datetime) -> bool:
    """The first round is complete when every message to a recipient has its outcome
    (an HQ alert about a dead letter does not hold the device's "notified" back).

    The alarm row is locked first: two hubs finishing an alarm's last two deliveries at the
    same moment would otherwise each still see the other's as open, and neither would mark
    the alarm notified. After the lock, the next statement sees what the other committed.
    """
    alarm = session.exec(select(Alarm).where(Alarm.id == alarm_pk).with_for_update()).first()
    if alarm is None or alarm.state != AlarmState.RECEIVED.value:
        return False
    open_rows = session.exec(
        select(Delivery.id).where(
            Delivery.alarm_pk == alarm_pk,
            col(Delivery.status).in_(OPEN_STATUSES),
            Delivery.kind != DEAD_LETTER_KIND,
        )
    ).first()
    if open_rows is not None:
        return False
    alarm.state = AlarmState.NOTIFIED.value
    session.add(alarm)
    session.add(
        AlarmEvent(
            alarm_pk=alarm_pk,
            at=now,
            kind="notified",
            detail="first round complete",
            hq_only=alarm.duress,  # a cancelled alarm's first round never completes
        )
    )
    if not alarm.duress:
        device_ack(session, alarm, AckStage.NOTIFIED, now)
    return True


def stop_deliveries_to(
    session: Session, reason: str, now: datetime, **recipient: int | None
) -> int:
    """Cancel everything still waiting to go to one recipient who must get nothing more
    (``recipient``: ``contact_id=``, ``responder_id=`` or ``registration_id=``, as for
    ``hub.outbox.cancel_open_deliveries``), and complete the first round of each alarm that
    now waits for nothing, as the dispatcher does when it cancels them itself (the wristband
    hears "notified"). Returns how many messages were cancelled."""
    rows = cancel_open_deliveries(session, reason, now, **recipient)
    session.flush()
    for alarm_pk in sorted({row.alarm_pk for row in rows if row.alarm_pk is not None}):
        complete_first_round(session, alarm_pk, now)
    return len(rows)


def _delivery_event(session: Session, row: Delivery, kind: str, text: str, now: datetime) -> None:
    if row.alarm_pk is not None:
        event = AlarmEvent(
            alarm_pk=row.alarm_pk,
            at=now,
            kind=kind,
            detail=text[:2000],
            role=row.role,
            hq_only=row.hq_only,
        )
        session.add(event)


def _reference(row: Delivery) -> str:
    """What a message is about, as plugins show it: an alarm (A12), a rejected message (R3), a
    device event (D4), a fund request (F5), or, for other messages about no alarm (an event
    announcement), their kind."""
    short = short_reference(row)
    return short if short != "-" else row.kind


def _notification(row: Delivery, is_test: bool, ids: Ids) -> Notification:
    """The message for its plugin. Its ``delivery_id`` is the one outsiders see: a plugin may
    hand it on (an idempotency key for a partner's own system), and the row's own id would
    count the messages for HQ only that came between (``hub.outside_ids``)."""
    assert row.id is not None
    ref = _reference(row)
    return Notification(
        delivery_id=ids.shown(row.id),
        url=row.channel_url,
        recipient=row.recipient,
        language=row.language,
        title=row.title,
        body=row.body,
        short=row.short,
        alarm_ref=ref,
        is_test=is_test,
    )
