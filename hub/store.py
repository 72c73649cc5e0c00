"""Transactions of the alarm path. Each public method is one commit.

An alarm, its first timeline event and one delivery row per recipient are committed together
before the broker gets its PUBACK, so nothing the hub acknowledged can be lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from devicekit import protocol
from devicekit.protocol import AckStage
from hub import supervision
from hub.authenticity import DeviceKey, SeqVerdict, admit_seq, clock_skew
from hub.clock import Clock, SystemClock
from hub.deliveries import DeliveryJob, DeliveryStore, new_instance_id
from hub.lifecycle import Lifecycle, device_stage
from hub.messages import MessageFacts
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

        ``from_device=False``: raised by the hub itself (a training alarm), so its ``seq`` is
        not the device's and must not move the device's anti-replay mark.
        """
        now = self.clock.now()
        with Session(self.engine) as session:
            existing = self._find_alarm(session, device_id, message.alarm_id)
            if existing is not None:
                return self._record_copy(session, existing)
            device = self._active_device(session, device_id)
            if from_device:
                admit_seq(device, "alarm", message.seq)
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
            if message.battery is not None:
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
    ) -> int:
        """Keep a refused message whole, with its reason, and queue a report to every HQ contact.

        ``suspicious``: it failed authentication or replay checks (a forgery, a replay).
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
            facts = MessageFacts(
                ref=f"R{rejected.id}",
                kind="",
                defender="",
                timezone="UTC",
                device_id=device_id or "?",
                device_ts=now,
                lat=None,
                lon=None,
                accuracy_m=None,
                fix_ts=None,
                battery=None,
                at=now,
                reason=f"SUSPICIOUS, possibly forged or replayed: {reason}"
                if suspicious
                else reason,
                channel=channel or "?",
            )
            for target in contacts_with_roles(session, None, (Role.HQ,)):
                queue(
                    session,
                    f"R{rejected.id}:{target.key}",
                    target,
                    "rejected",
                    facts,
                    rejected_pk=rejected.id,
                )
            session.commit()
            return rejected.id

    def record_device_message(
        self,
        device_id: str,
        message: protocol.Status | protocol.Heartbeat | protocol.Location | protocol.Cancel,
    ) -> None:
        """Heartbeat, status, location and cancel: supervision and the alarm's lifecycle."""
        now = self.clock.now()
        with Session(self.engine) as session:
            device = self._active_device(session, device_id)
            if isinstance(message, protocol.Status):
                supervision.record_status(
                    session, device, message.state == "online", now, self.lifecycle
                )
            elif isinstance(message, protocol.Heartbeat):
                if admit_seq(device, message.type, message.seq) is SeqVerdict.COPY:
                    return
                self._touch_device(session, device, message.seq, now)
                supervision.record_heartbeat(
                    session, device, message.interval_s, message.battery, now
                )
            else:
                if not self._alarm_message(session, device, message, now):
                    return
                self._touch_device(session, device, message.seq, now)
            session.add(device)
            session.commit()

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
        device = session.get(Device, device_id)
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

    def _alarm_message(
        self,
        session: Session,
        device: Device,
        message: protocol.Location | protocol.Cancel,
        now: datetime,
    ) -> bool:
        """Apply a cancel or location to its alarm; False for a redelivered copy (nothing to do
        but, for a cancel, answer again)."""
        if isinstance(message, protocol.Location):
            if admit_seq(device, message.type, message.seq) is SeqVerdict.COPY:
                return False
            if message.alarm_id is None:
                return True  # a position outside any alarm: not kept (dangerous data)
        assert message.alarm_id is not None
        alarm = self._find_alarm(session, device.id, message.alarm_id)
        if alarm is None:
            raise UnknownAlarm(
                f"{message.type} for alarm {message.alarm_id!r}, which device {device.id!r} "
                "never raised (or the hub has not stored)"
            )
        defender = session.get(Defender, alarm.defender_id)
        assert defender is not None
        if isinstance(message, protocol.Cancel):
            if alarm.cancel_seq != message.seq:  # not a copy of the cancel already applied
                admit_seq(device, message.type, message.seq)
                alarm.cancel_seq = message.seq
                session.add(alarm)
            self.lifecycle.cancel_request(session, alarm, defender, message.code, now, message.seq)
        else:
            self.lifecycle.location_update(
                session, alarm, defender, message.seq, message.position, now
            )
        return True


def _late(skew: float) -> str:
    direction = "ahead of" if skew > 0 else "behind"
    return f"late: the device clock is {abs(skew):.0f} s {direction} the hub's (alarm kept)"


def _pk(row: Alarm) -> int:
    assert row.id is not None, "the row must be flushed before its id is used"
    return row.id


__all__ = ["AlarmOutcome", "DeliveryJob", "Store", "UnknownAlarm", "UnknownDevice", "ack_stage_of"]
