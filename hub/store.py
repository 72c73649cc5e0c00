"""Transactions of the alarm path. Each public method is one commit.

An alarm, its first timeline event and one delivery row per recipient are committed together
before the broker gets its PUBACK, so nothing the hub acknowledged can be lost.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from devicekit import protocol
from devicekit.protocol import AckStage
from hub import supervision
from hub.admission import RefusalSummary
from hub.authenticity import (
    REPLAY_WINDOW,
    DeviceKey,
    SeqCheck,
    SeqVerdict,
    Suspicious,
    admit_seq,
    clock_skew,
)
from hub.clock import Clock, SystemClock
from hub.deliveries import DeliveryJob, DeliveryStore, new_instance_id
from hub.lifecycle import Lifecycle, device_ack, device_stage
from hub.messages import MessageEvent, MessageFacts
from hub.models import (
    Alarm,
    AlarmEvent,
    Defender,
    Delivery,
    Device,
    RejectedMessage,
    Role,
    Timer,
)
from hub.outbox import queue
from hub.recipients import contacts_with_roles
from hub.retry import RetryPolicy

log = logging.getLogger(__name__)


class UnknownDevice(LookupError):
    """A message arrived for a device id that is not registered (or is suspended)."""


class UnknownAlarm(LookupError):
    """A cancel or location names an alarm id the hub has not stored for that device."""


@dataclass(frozen=True)
class AlarmOutcome:
    alarm_pk: int
    alarm_id: str
    device_id: str
    created: bool
    ack_stage: AckStage
    device_key: str | None = None  #: signs the ack (PROTOCOL.md 5.5), set by the ingest; secret


class Handled(enum.Enum):
    """What became of a cancel, location, heartbeat or status."""

    APPLIED = "applied"  #: new: applied to the device and its alarm
    COPY = "copy"  #: a copy of what was applied (MQTT redelivery, a re-sent cancel): answered
    STALE = "stale"  #: telemetry older than the anti-replay window: ignored, only counted


#: What a copy of a stored alarm is answered with (a duress alarm always says "cancelled").
ack_stage_of = device_stage


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


class Store(DeliveryStore):
    def __init__(
        self,
        engine: Engine,
        lifecycle: Lifecycle | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        clock_tolerance_s: float = 300.0,
    ) -> None:
        self.engine = engine
        #: A device timestamp further than this from the hub's clock is flagged late.
        self.clock_tolerance_s = clock_tolerance_s
        self.lifecycle = lifecycle or Lifecycle()
        self.clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self.instance_id = new_instance_id()
        #: Deliveries this hub claimed and is still sending: never taken back from itself,
        #: whatever its clock says (a clock step must not look like an expired lease).
        self._in_flight: set[int] = set()

    # -- ingest -------------------------------------------------------------------------------

    def record_alarm(
        self, device_id: str, message: protocol.Alarm, *, from_device: bool = True
    ) -> AlarmOutcome:
        """Store ``message`` once per (device, alarm id) with its outbox rows; count re-sends.

        A new ``alarm_id`` with a valid signature is never refused for its ``seq``: out of
        order, below the anti-replay window or even a number already used, it is stored, and
        the last two are noted on its timeline (PROTOCOL.md 5.3). ``from_device=False``: raised
        by the hub itself (a training alarm), so its ``seq`` is not the device's and must not
        move the device's anti-replay window.
        """
        now = self.clock.now()
        with Session(self.engine) as session:
            existing = self._find_alarm(session, device_id, message.alarm_id)
            if existing is not None:
                return self._record_copy(session, existing)
            device = self._active_device(session, device_id)
            check = admit_seq(device, "alarm", message.seq) if from_device else None
            defender = session.get(Defender, device.defender_id)
            assert defender is not None  # foreign key
            position = message.position
            skew = clock_skew(_utc(message.ts), now, self.clock_tolerance_s)
            alarm = Alarm(
                device_id=device_id,
                defender_id=device.defender_id,
                alarm_id=message.alarm_id,
                kind=message.kind.value,
                device_ts=_utc(message.ts),
                seq=message.seq,
                lat=position.lat if position else None,
                lon=position.lon if position else None,
                accuracy_m=position.accuracy_m if position else None,
                fix_ts=_utc(position.fix_ts) if position else None,
                battery=message.battery,
                received_at=now,
                clock_skew_s=skew,
            )
            session.add(alarm)
            session.flush()
            if skew is not None:
                session.add(
                    AlarmEvent(alarm_pk=_pk(alarm), at=now, kind="late", detail=_late(skew))
                )
            if check is not None:
                _note_odd_seq(session, alarm, "alarm", message.seq, check, now)
            session.add(
                AlarmEvent(
                    alarm_pk=_pk(alarm),
                    at=now,
                    kind="received",
                    actor=f"device:{device_id}",
                    detail=f"{message.kind.value} alarm",
                )
            )
            self.lifecycle.start(session, alarm, defender, now)
            self._touch_device(session, device, message.seq, now)
            if message.battery is not None and (check is None or check.newest):
                supervision.record_battery(session, device, message.battery, now)
            session.add(device)
            alarm_pk = _pk(alarm)  # read now: the commit expires the row
            try:
                session.commit()
            except IntegrityError:  # another hub instance stored it first
                session.rollback()
                existing = self._find_alarm(session, device_id, message.alarm_id)
                assert existing is not None
                return self._record_copy(session, existing)
            return AlarmOutcome(alarm_pk, message.alarm_id, device_id, True, AckStage.RECEIVED)

    def device_key(self, device_id: str) -> DeviceKey | None:
        """The device's key and encryption setting, or None when no such device is registered."""
        with Session(self.engine) as session:
            device = session.get(Device, device_id)
            return None if device is None else DeviceKey(device.id, device.key, device.encrypt)

    def record_rejected(
        self,
        topic: str,
        device_id: str | None,
        channel: str | None,
        reason: str,
        payload: bytes,
        suspicious: bool = False,
        report: bool = True,
    ) -> int:
        """Keep a refused message whole, with its reason, and queue a report to every HQ contact.

        ``suspicious``: it failed authentication or replay checks (a forgery, a replay).
        ``report=False``: kept only; a summary of its account's refusals reports it
        (hub/admission.py).
        """
        now = self.clock.now()
        with Session(self.engine) as session:
            rejected = RejectedMessage(
                topic=topic,
                device_id=device_id,
                channel=channel,
                reason=reason,
                payload=payload,
                payload_size=len(payload),
                received_at=now,
                suspicious=suspicious,
            )
            session.add(rejected)
            session.flush()
            assert rejected.id is not None
            if report:
                if suspicious:
                    reason = f"SUSPICIOUS, possibly forged or replayed: {reason}"
                _report_to_hq(session, rejected.id, device_id or "?", channel, reason, now)
            session.commit()
            return rejected.id

    def record_refusal_summary(self, summary: RefusalSummary) -> int:
        """One account's refusals of an interval as one row (no payload: the first ones are
        kept whole in their own rows) and one report to every HQ contact."""
        now = self.clock.now()
        with Session(self.engine) as session:
            row = RejectedMessage(
                topic=summary.topic,
                device_id=summary.device_id,
                channel=summary.channel,
                reason=summary.reason,
                payload=b"",
                payload_size=0,
                received_at=now,
                suspicious=summary.suspicious > 0,
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            label = summary.account.label
            _report_to_hq(
                session, row.id, label, summary.channel, summary.reason, now,
                MessageEvent.REFUSED_BURST,
            )  # fmt: skip
            session.commit()
            return row.id

    def record_device_message(
        self,
        device_id: str,
        message: protocol.Status | protocol.Heartbeat | protocol.Location | protocol.Cancel,
    ) -> Handled:
        """Heartbeat, status, location and cancel: supervision and the alarm's lifecycle."""
        now = self.clock.now()
        with Session(self.engine) as session:
            device = self._active_device(session, device_id)
            if isinstance(message, protocol.Status):
                supervision.record_status(
                    session, device, message.state == "online", now, self.lifecycle
                )
                handled = Handled.APPLIED
            elif isinstance(message, protocol.Cancel):
                handled = self._cancel(session, device, message, now)
            else:
                handled = self._telemetry(session, device, message, now)
            if handled is not Handled.STALE:
                session.add(device)
                session.commit()
            return handled

    def database_answers(self) -> bool:
        """Whether a new connection to the database can run a query: after an error, tells an
        outage (no) from an error that only the message being stored causes (yes)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def record_event(self, alarm_pk: int, kind: str, detail: str = "", actor: str = "hub") -> None:
        with Session(self.engine) as session:
            session.add(AlarmEvent(alarm_pk=alarm_pk, kind=kind, actor=actor, detail=detail))
            session.commit()

    # -- reads --------------------------------------------------------------------------------

    def get_alarm(self, alarm_pk: int) -> Alarm | None:
        with Session(self.engine) as session:
            return session.get(Alarm, alarm_pk)

    def find_alarm(self, device_id: str, alarm_id: str) -> Alarm | None:
        with Session(self.engine) as session:
            return self._find_alarm(session, device_id, alarm_id)

    def alarms(self, limit: int = 50) -> list[Alarm]:
        with Session(self.engine) as session:
            query = select(Alarm).order_by(col(Alarm.id).desc()).limit(limit)
            return list(session.exec(query))

    def events(self, alarm_pk: int) -> list[AlarmEvent]:
        with Session(self.engine) as session:
            query = select(AlarmEvent).where(AlarmEvent.alarm_pk == alarm_pk)
            return list(session.exec(query.order_by(col(AlarmEvent.id))))

    def deliveries(self, alarm_pk: int | None = None) -> list[Delivery]:
        with Session(self.engine) as session:
            query = select(Delivery).order_by(col(Delivery.id))
            if alarm_pk is not None:
                query = query.where(Delivery.alarm_pk == alarm_pk)
            return list(session.exec(query))

    def timers(self, alarm_pk: int) -> list[Timer]:
        with Session(self.engine) as session:
            query = select(Timer).where(Timer.alarm_pk == alarm_pk)
            return list(session.exec(query.order_by(col(Timer.due_at))))

    def rejected(self, limit: int = 50) -> list[RejectedMessage]:
        with Session(self.engine) as session:
            query = select(RejectedMessage).order_by(col(RejectedMessage.id).desc()).limit(limit)
            return list(session.exec(query))

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _find_alarm(session: Session, device_id: str, alarm_id: str) -> Alarm | None:
        query = select(Alarm).where(Alarm.device_id == device_id, Alarm.alarm_id == alarm_id)
        return session.exec(query).first()

    @staticmethod
    def _active_device(session: Session, device_id: str) -> Device:
        """The device row, locked until the commit on PostgreSQL: hub instances sharing the
        subscription update its anti-replay window one message at a time."""
        device = session.get(Device, device_id, with_for_update=True)
        if device is None:
            raise UnknownDevice(f"device {device_id!r} is not registered")
        if not device.active:
            raise UnknownDevice(f"device {device_id!r} is suspended")
        return device

    @staticmethod
    def _touch_device(session: Session, device: Device, seq: int, now: datetime) -> None:
        device.last_seq = max(seq, device.last_seq or 0)
        supervision.mark_seen(session, device, now)

    @staticmethod
    def _record_copy(session: Session, alarm: Alarm) -> AlarmOutcome:
        alarm.copies_received += 1
        session.add(alarm)
        session.add(
            AlarmEvent(
                alarm_pk=_pk(alarm),
                kind="duplicate",
                actor=f"device:{alarm.device_id}",
                detail=f"copy {alarm.copies_received} of the same alarm id",
            )
        )
        session.commit()
        return AlarmOutcome(_pk(alarm), alarm.alarm_id, alarm.device_id, False, ack_stage_of(alarm))

    def _cancel(
        self, session: Session, device: Device, message: protocol.Cancel, now: datetime
    ) -> Handled:
        """Apply a cancel to its alarm once; answer every copy of it (PROTOCOL.md 5.3).

        A cancel only ever concerns its own alarm, so the alarm keeps the highest cancel seq
        applied to it: a cancel above it is new for that alarm and is applied, however late it
        arrives (below the device's window too: a genuine cancel is never lost); one at or below
        it is a copy, or a cancel the device itself replaced with a newer one, and is only
        answered. A replay can therefore never apply a cancel again, e.g. to an alarm opened
        again after it.
        """
        alarm = self._alarm_of(session, device, message)
        if message.seq <= alarm.seq:
            raise Suspicious(
                f"cancel seq {message.seq} is not above seq {alarm.seq} of the alarm it "
                "cancels; a device's cancel always comes after its alarm (PROTOCOL.md 5.3)"
            )
        check = admit_seq(device, message.type, message.seq)
        if alarm.cancel_seq is not None and message.seq <= alarm.cancel_seq:
            _answer_cancel(session, alarm, now)
            return Handled.COPY
        defender = session.get(Defender, alarm.defender_id)
        assert defender is not None
        alarm.cancel_seq = message.seq
        session.add(alarm)
        _note_odd_seq(session, alarm, message.type, message.seq, check, now)
        # A cancel of an alarm already closed (or "cancelled" by a duress code) is answered by
        # the lifecycle itself, so the device hears it however the alarm ended.
        self.lifecycle.cancel_request(session, alarm, defender, message.code, now, message.seq)
        self._touch_device(session, device, message.seq, now)
        return Handled.APPLIED

    def _telemetry(
        self,
        session: Session,
        device: Device,
        message: protocol.Heartbeat | protocol.Location,
        now: datetime,
    ) -> Handled:
        """A heartbeat or location: applied when its seq is new in the window; a seen one is an
        MQTT redelivery, one below the window too old to tell; both are ignored, never refused.
        Only the newest heartbeat sets the battery and interval (an older one arrived late)."""
        check = admit_seq(device, message.type, message.seq)
        if check.verdict is SeqVerdict.SEEN:
            return Handled.COPY
        if check.verdict is SeqVerdict.BELOW:
            return Handled.STALE
        if isinstance(message, protocol.Heartbeat):
            if check.newest:
                supervision.record_heartbeat(
                    session, device, message.interval_s, message.battery, now
                )
        elif message.alarm_id is not None:  # a position outside any alarm is not kept
            alarm = self._alarm_of(session, device, message)
            defender = session.get(Defender, alarm.defender_id)
            assert defender is not None
            self.lifecycle.location_update(
                session, alarm, defender, message.seq, message.position, now
            )
        self._touch_device(session, device, message.seq, now)
        return Handled.APPLIED

    def _alarm_of(
        self, session: Session, device: Device, message: protocol.Location | protocol.Cancel
    ) -> Alarm:
        assert message.alarm_id is not None
        alarm = self._find_alarm(session, device.id, message.alarm_id)
        if alarm is None:
            raise UnknownAlarm(
                f"{message.type} for alarm {message.alarm_id!r}, which device {device.id!r} "
                "never raised (or the hub has not stored)"
            )
        return alarm


def _answer_cancel(session: Session, alarm: Alarm, now: datetime) -> None:
    """Tell the device again how its alarm ended, if it did: ``cancelled`` or ``resolved`` is
    what settles a pending cancel (PROTOCOL.md 6); an open alarm gives no answer."""
    stage = ack_stage_of(alarm)
    if stage in (AckStage.CANCELLED, AckStage.RESOLVED):
        device_ack(session, alarm, stage, now)


def _note_odd_seq(
    session: Session, alarm: Alarm, channel: str, seq: int, check: SeqCheck, now: datetime
) -> None:
    """Put on the alarm's timeline what was odd about the seq of an alarm or cancel accepted
    anyway: a number already used by another message (suspicious), or one below the window."""
    if check.verdict is SeqVerdict.SEEN:
        kind = "seq_reused"
        what = (
            f"SUSPICIOUS: {channel} seq {seq} was already used by another message of this "
            "device (a reset counter, or someone else holding its key)"
        )
    elif check.verdict is SeqVerdict.BELOW:
        kind = "seq_below_window"
        what = f"{channel} seq {seq} arrived after messages more than {REPLAY_WINDOW} newer"
    else:
        return
    why = "its alarm_id is new" if channel == "alarm" else "no later cancel was applied"
    session.add(
        AlarmEvent(
            alarm_pk=_pk(alarm),
            at=now,
            kind=kind,
            actor=f"device:{alarm.device_id}",
            detail=f"{what}; accepted, since {why}",
        )
    )


def _report_to_hq(
    session: Session,
    rejected_pk: int,
    device: str,
    channel: str | None,
    reason: str,
    now: datetime,
    event: MessageEvent = MessageEvent.REJECTED,
) -> None:
    """Queue the report of refused message ``rejected_pk`` to every HQ contact.

    A report that cannot be written (a broken text, a bug) must not cost the refusal itself, or
    the message would be neither kept nor acknowledged: the row stays, listed by the API, and
    the failure is logged. A database error is raised: the caller's transaction is lost anyway.
    """
    facts = MessageFacts(
        ref=f"R{rejected_pk}", kind="", defender="", timezone="UTC", device_id=device,
        device_ts=now, lat=None, lon=None, accuracy_m=None, fix_ts=None, battery=None, at=now,
        reason=reason, channel=channel or "?",
    )  # fmt: skip
    try:
        with session.begin_nested():
            for target in contacts_with_roles(session, None, (Role.HQ,)):
                key = f"R{rejected_pk}:{target.key}"
                queue(session, key, target, event, facts, rejected_pk=rejected_pk)
    except SQLAlchemyError:
        raise
    except Exception as exc:
        log.error(
            "refused message R%s is kept, but its report to HQ could not be written (%s)",
            rejected_pk,
            type(exc).__name__,
        )


def _late(skew: float) -> str:
    direction = "ahead of" if skew > 0 else "behind"
    return f"late: the device clock is {abs(skew):.0f} s {direction} the hub's (alarm kept)"


def _pk(row: Alarm) -> int:
    assert row.id is not None, "the row must be flushed before its id is used"
    return row.id


__all__ = [
    "AlarmOutcome",
    "DeliveryJob",
    "Handled",
    "Store",
    "UnknownAlarm",
    "UnknownDevice",
    "ack_stage_of",
]
