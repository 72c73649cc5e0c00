"""Transactions of the alarm path. Each public method is one commit.

An alarm, its first timeline event and one delivery row per recipient are committed together
before the broker gets its PUBACK, so nothing the hub acknowledged can be lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update

from devicekit import protocol
from devicekit.protocol import AckStage
from hub import supervision
from hub.clock import Clock, SystemClock
from hub.lifecycle import Lifecycle, device_ack
from hub.messages import MessageFacts
from hub.models import (
    Alarm,
    AlarmEvent,
    AlarmState,
    Defender,
    Delivery,
    DeliveryStatus,
    Device,
    RejectedMessage,
    Role,
    Timer,
)
from hub.outbox import queue, queue_fallback
from hub.plugin_api import DeliveryResult, Notification
from hub.recipients import contacts_with_roles


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


def ack_stage_of(alarm: Alarm) -> AckStage:
    """What a copy of a stored alarm is answered with. A duress alarm always says "cancelled"."""
    if alarm.duress or alarm.state == AlarmState.CANCELLED:
        return AckStage.CANCELLED
    if alarm.state in (AlarmState.RESOLVED, AlarmState.FALSE_ALARM):
        return AckStage.RESOLVED
    if alarm.acknowledged_at is not None:
        return AckStage.RESPONDER_COMING
    if alarm.state == AlarmState.RECEIVED:
        return AckStage.RECEIVED
    return AckStage.NOTIFIED


@dataclass(frozen=True)
class DeliveryJob:
    delivery_id: int
    alarm_pk: int | None
    notification: Notification


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


class Store:
    def __init__(
        self, engine: Engine, lifecycle: Lifecycle | None = None, clock: Clock | None = None
    ) -> None:
        self.engine = engine
        self.lifecycle = lifecycle or Lifecycle()
        self.clock = clock or SystemClock()

    # -- ingest -------------------------------------------------------------------------------

    def record_alarm(self, device_id: str, message: protocol.Alarm) -> AlarmOutcome:
        """Store ``message`` once per (device, alarm id) with its outbox rows; count re-sends."""
        now = self.clock.now()
        with Session(self.engine) as session:
            existing = self._find_alarm(session, device_id, message.alarm_id)
            if existing is not None:
                return self._record_copy(session, existing)
            device = self._active_device(session, device_id)
            defender = session.get(Defender, device.defender_id)
            assert defender is not None  # foreign key
            position = message.position
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
            )
            session.add(alarm)
            session.flush()
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
            try:
                session.commit()
            except IntegrityError:  # another hub instance stored it first
                session.rollback()
                existing = self._find_alarm(session, device_id, message.alarm_id)
                assert existing is not None
                return self._record_copy(session, existing)
            return AlarmOutcome(_pk(alarm), alarm.alarm_id, device_id, True, AckStage.RECEIVED)

    def record_rejected(
        self, topic: str, device_id: str | None, channel: str | None, reason: str, payload: bytes
    ) -> int:
        """Keep a refused message whole, with its reason, and queue a report to every HQ contact."""
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
                reason=reason,
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
                self._touch_device(session, device, message.seq, now)
                supervision.record_heartbeat(
                    session, device, message.interval_s, message.battery, now
                )
            else:
                self._touch_device(session, device, message.seq, now)
                self._alarm_message(session, device, message, now)
            session.add(device)
            session.commit()

    def record_event(self, alarm_pk: int, kind: str, detail: str = "", actor: str = "hub") -> None:
        with Session(self.engine) as session:
            session.add(AlarmEvent(alarm_pk=alarm_pk, kind=kind, actor=actor, detail=detail))
            session.commit()

    # -- dispatch -----------------------------------------------------------------------------

    def requeue_interrupted(self) -> int:
        """Deliveries a crashed hub left mid-send go back to pending (at-least-once)."""
        with Session(self.engine) as session:
            result = session.execute(
                update(Delivery)
                .where(col(Delivery.status) == DeliveryStatus.SENDING.value)
                .values(status=DeliveryStatus.PENDING.value)
            )
            session.commit()
            return int(result.rowcount)  # type: ignore[attr-defined]

    def claim_pending(self, limit: int = 100) -> list[DeliveryJob]:
        """Mark up to ``limit`` pending deliveries as sending and return them."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(Delivery)
                .where(Delivery.status == DeliveryStatus.PENDING.value)
                .order_by(col(Delivery.id))
                .limit(limit)
            ).all()
            jobs = []
            for row in rows:
                row.status = DeliveryStatus.SENDING.value
                row.attempts += 1
                session.add(row)
                assert row.id is not None
                jobs.append(
                    DeliveryJob(
                        row.id, row.alarm_pk, _notification(row, self._is_test(session, row))
                    )
                )
            session.commit()
            return jobs

    def finish_delivery(self, delivery_id: int, result: DeliveryResult) -> bool:
        """Record a send's result; a failure moves to the recipient's next channel.

        Returns True when this completed the alarm's first round (the device is told "notified").
        """
        now = self.clock.now()
        with Session(self.engine) as session:
            row = session.get(Delivery, delivery_id)
            assert row is not None
            row.status = (DeliveryStatus.SENT if result.ok else DeliveryStatus.FAILED).value
            row.detail = result.detail[:1000]
            row.finished_at = now
            session.add(row)
            fallback = None if result.ok else queue_fallback(session, row, now)
            completed = False
            if row.alarm_pk is not None:
                text = f"{row.recipient} via {row.channel_masked}: {row.detail}".strip()
                if fallback is not None:
                    text += f"; trying {fallback.channel_masked}"
                session.add(
                    AlarmEvent(
                        alarm_pk=row.alarm_pk,
                        at=now,
                        kind="delivered" if result.ok else "delivery_failed",
                        detail=text,
                    )
                )
                session.flush()
                completed = self._complete_if_all_done(session, row.alarm_pk, now)
            session.commit()
            return completed

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
    ) -> None:
        if message.alarm_id is None:
            return  # a position outside any alarm: not kept (locations are dangerous data)
        alarm = self._find_alarm(session, device.id, message.alarm_id)
        if alarm is None:
            raise UnknownAlarm(
                f"{message.type} for alarm {message.alarm_id!r}, which device {device.id!r} "
                "never raised (or the hub has not stored)"
            )
        defender = session.get(Defender, alarm.defender_id)
        assert defender is not None
        if isinstance(message, protocol.Cancel):
            self.lifecycle.cancel_request(session, alarm, defender, message.code, now, message.seq)
        else:
            self.lifecycle.location_update(
                session, alarm, defender, message.seq, message.position, now
            )

    @staticmethod
    def _complete_if_all_done(session: Session, alarm_pk: int, now: datetime) -> bool:
        alarm = session.get(Alarm, alarm_pk)
        if alarm is None or alarm.state != AlarmState.RECEIVED.value:
            return False
        open_rows = session.exec(
            select(Delivery.id).where(
                Delivery.alarm_pk == alarm_pk,
                col(Delivery.status).in_(
                    [DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]
                ),
            )
        ).first()
        if open_rows is not None:
            return False
        alarm.state = AlarmState.NOTIFIED.value
        session.add(alarm)
        session.add(
            AlarmEvent(alarm_pk=alarm_pk, at=now, kind="notified", detail="first round complete")
        )
        if not alarm.duress:
            device_ack(session, alarm, AckStage.NOTIFIED, now)
        return True

    @staticmethod
    def _is_test(session: Session, row: Delivery) -> bool:
        if row.alarm_pk is None:
            return False
        alarm = session.get(Alarm, row.alarm_pk)
        return alarm is not None and alarm.kind == protocol.AlarmKind.TEST.value


def _pk(row: Alarm) -> int:
    assert row.id is not None, "the row must be flushed before its id is used"
    return row.id


def _notification(row: Delivery, is_test: bool) -> Notification:
    assert row.id is not None
    ref = f"A{row.alarm_pk}" if row.alarm_pk is not None else f"R{row.rejected_pk}"
    return Notification(
        delivery_id=row.id,
        url=row.channel_url,
        recipient=row.recipient,
        language=row.language,
        title=row.title,
        body=row.body,
        short=row.short,
        alarm_ref=ref,
        is_test=is_test,
    )


__all__ = ["AlarmOutcome", "DeliveryJob", "Store", "UnknownAlarm", "UnknownDevice", "ack_stage_of"]
