"""Everything that changes an alarm after it arrived, each in its own transaction: HQ actions
(from the CLI and the HTTP API), acknowledgement links, timers and supervision checks.

The running hub calls :meth:`AlarmActions.tick` in a loop; a CLI process calls the HQ actions
directly on the same database. Either way the results are rows (deliveries, device acks,
timers) that the hub then sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hub import supervision
from hub.acklinks import AckLink, find_link
from hub.clock import Clock, SystemClock
from hub.lifecycle import FIRST_MESSAGE_KINDS, Lifecycle, LifecycleError, event
from hub.models import (
    CLOSED_STATES,
    Alarm,
    AlarmState,
    Defender,
    Delivery,
    Device,
    DeviceAck,
    Timer,
)


@dataclass(frozen=True)
class PendingAck:
    id: int
    device_id: str
    alarm_id: str
    stage: str
    key: str | None  #: the device's key, which signs the ack; a secret


@dataclass(frozen=True)
class TickResult:
    timers_run: int
    silent_devices: list[str]


def parse_ref(ref: str) -> int:
    """``A12`` (or ``12``) -> 12."""
    try:
        return int(ref.strip().removeprefix("A").removeprefix("a"))
    except ValueError:
        raise LifecycleError(f"{ref!r} is not an alarm reference like A12") from None


class AlarmActions:
    def __init__(
        self, engine: Engine, lifecycle: Lifecycle | None = None, clock: Clock | None = None
    ) -> None:
        self.engine = engine
        self.lifecycle = lifecycle or Lifecycle()
        self.clock = clock or SystemClock()

    # -- HQ actions ---------------------------------------------------------------------------
    # ``note``: the operator's own words (why, what they did); it goes into the timeline in the
    # same transaction as the action, under the same actor.

    def acknowledge(self, ref: str, actor: str, note: str = "") -> None:
        with self._alarm(ref) as (session, alarm, defender):
            now = self.clock.now()
            self.lifecycle.acknowledge(session, alarm, defender, actor, now)
            _note(session, alarm, actor, note, now)
            session.commit()

    def verify(self, ref: str, actor: str, note: str = "") -> None:
        with self._alarm(ref) as (session, alarm, defender):
            now = self.clock.now()
            self.lifecycle.verify(session, alarm, defender, actor, now)
            _note(session, alarm, actor, note, now)
            session.commit()

    def escalate(self, ref: str, actor: str, note: str = "") -> int:
        """Run the stages still waiting for their delay now; returns the messages queued."""
        with self._alarm(ref) as (session, alarm, defender):
            now = self.clock.now()
            before = _first_messages(session, alarm)
            self.lifecycle.escalate_now(session, alarm, defender, actor, now)
            _note(session, alarm, actor, note, now)
            queued = _first_messages(session, alarm) - before
            session.commit()
            return queued

    def resolve(self, ref: str, actor: str, note: str = "") -> None:
        self._close(ref, AlarmState.RESOLVED, actor, note)

    def false_alarm(self, ref: str, actor: str, note: str = "") -> None:
        self._close(ref, AlarmState.FALSE_ALARM, actor, note)

    def _close(self, ref: str, state: AlarmState, actor: str, note: str) -> None:
        with self._alarm(ref) as (session, alarm, defender):
            now = self.clock.now()
            self.lifecycle.close(session, alarm, defender, state, actor, now)
            _note(session, alarm, actor, note, now)
            session.commit()

    # -- acknowledgement links ----------------------------------------------------------------

    def describe_token(self, token: str) -> tuple[str, str] | None:
        """(recipient, alarm reference) for a link that works, without acknowledging anything.
        None for a link that does not (or no longer) work: ``hub.acklinks``."""
        with Session(self.engine) as session:
            link = self._link(session, token)
            return None if link is None else (link.delivery.recipient, link.ref)

    def acknowledge_token(self, token: str) -> tuple[str, str] | None:
        """Acknowledge as the recipient the link was sent to.

        Returns (alarm reference, alarm state as the link's holder may see it), or None for a
        link that does not work. A closed alarm is not acknowledged any more: its state says
        why. After a duress code a recipient told "cancelled" sees a cancelled alarm and
        acknowledges nothing; HQ's timeline notes that they tried.
        """
        with Session(self.engine) as session:
            link = self._link(session, token)
            if link is None:
                return None
            alarm, delivery, now = link.alarm, link.delivery, self.clock.now()
            if link.closed and AlarmState(alarm.state) not in CLOSED_STATES:
                detail = f"{delivery.recipient} opened their link after the duress code"
                event(session, alarm, "link_after_duress", detail, actor=delivery.recipient, at=now)
                session.commit()
            elif delivery.acknowledged_at is None and not link.closed:
                defender = session.get(Defender, alarm.defender_id)
                assert defender is not None
                self.lifecycle.acknowledge(
                    session, alarm, defender, delivery.recipient, now, delivery=delivery
                )
                session.commit()
            return link.ref, link.state.value

    def _link(self, session: Session, token: str) -> AckLink | None:
        return find_link(session, token, self.clock.now(), self.lifecycle.settings.ack_link_grace)

    # -- what the running hub does on every tick ----------------------------------------------

    def tick(self, limit: int = 100) -> TickResult:
        """Run due timers (one transaction each) and the silence check."""
        ran = 0
        for timer_id in self._due_timer_ids(limit):
            ran += self._run_timer(timer_id)
        with Session(self.engine) as session:
            silent = supervision.check_silent_devices(session, self.clock.now(), self.lifecycle)
            session.commit()
        return TickResult(ran, silent)

    def _due_timer_ids(self, limit: int) -> list[int]:
        with Session(self.engine) as session:
            query = (
                select(Timer.id)
                .where(col(Timer.done_at).is_(None), Timer.due_at <= self.clock.now())
                .order_by(col(Timer.due_at))
                .limit(limit)
            )
            return [timer_id for timer_id in session.exec(query) if timer_id is not None]

    def _run_timer(self, timer_id: int) -> int:
        now = self.clock.now()
        with Session(self.engine) as session:
            # Several hubs on PostgreSQL: the first to lock a timer runs it, the others skip it.
            query = select(Timer).where(Timer.id == timer_id, col(Timer.done_at).is_(None))
            timer = session.exec(query.with_for_update(skip_locked=True)).first()
            if timer is None or timer.alarm_pk is None:
                return 0
            alarm = session.get(Alarm, timer.alarm_pk)
            assert alarm is not None
            defender = session.get(Defender, alarm.defender_id)
            assert defender is not None
            stage = int(str(timer.payload.get("stage", 0)))
            if timer.kind == "stage":
                timer.outcome = self.lifecycle.run_stage(session, alarm, defender, stage, now)
            elif timer.kind == "reminder":
                round_ = int(str(timer.payload.get("round", 1)))
                timer.outcome = self.lifecycle.run_reminder(
                    session, alarm, defender, stage, round_, now
                )
            else:
                timer.outcome = f"unknown timer kind {timer.kind!r}"
            timer.done_at = now
            session.add(timer)
            session.commit()
            return 1

    def pending_device_acks(self, limit: int = 100) -> list[PendingAck]:
        with Session(self.engine) as session:
            query = (
                select(DeviceAck)
                .where(col(DeviceAck.sent_at).is_(None))
                .order_by(col(DeviceAck.id))
                .limit(limit)
            )
            rows = [row for row in session.exec(query) if row.id is not None]
            keys = {
                device.id: device.key
                for device in session.exec(
                    select(Device).where(col(Device.id).in_({row.device_id for row in rows}))
                )
            }
            return [
                PendingAck(
                    row.id or 0, row.device_id, row.alarm_id, row.stage, keys.get(row.device_id)
                )
                for row in rows
            ]

    def mark_device_acks_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        with Session(self.engine) as session:
            for row in session.exec(select(DeviceAck).where(col(DeviceAck.id).in_(ids))):
                row.sent_at = self.clock.now()
                session.add(row)
            session.commit()

    # -- helpers ------------------------------------------------------------------------------

    def _alarm(self, ref: str) -> _AlarmSession:
        return _AlarmSession(self.engine, parse_ref(ref))


def _note(session: Session, alarm: Alarm, actor: str, note: str, now: datetime) -> None:
    if note.strip():
        event(session, alarm, "note", note.strip(), actor=actor, at=now)


def _first_messages(session: Session, alarm: Alarm) -> int:
    """First messages of ``alarm`` queued so far, one per recipient (fallbacks not counted)."""
    query = select(func.count(col(Delivery.id))).where(
        Delivery.alarm_pk == alarm.id,
        col(Delivery.kind).in_(FIRST_MESSAGE_KINDS),
        Delivery.channel_index == 0,
    )
    return int(session.exec(query).one())


class _AlarmSession:
    """``with actions._alarm("A3") as (session, alarm, defender):`` — raises if unknown."""

    def __init__(self, engine: Engine, alarm_pk: int) -> None:
        self.session = Session(engine)
        self.alarm_pk = alarm_pk

    def __enter__(self) -> tuple[Session, Alarm, Defender]:
        alarm = self.session.get(Alarm, self.alarm_pk)
        if alarm is None:
            self.session.close()
            raise LifecycleError(f"no alarm A{self.alarm_pk}")
        defender = self.session.get(Defender, alarm.defender_id)
        assert defender is not None
        return self.session, alarm, defender

    def __exit__(self, *exc: object) -> None:
        self.session.close()
