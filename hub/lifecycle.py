"""The alarm's lifecycle: stages, reminders, acknowledgement, HQ actions, cancel and duress.

received -> notified -> acknowledged -> verified -> resolved | false_alarm | cancelled

Every function works inside the caller's session and transaction and takes ``now`` from the
hub's clock. What must happen later is a ``Timer`` row; what the device must hear is a
``DeviceAck`` row; what people must read is a ``Delivery`` row. So an HQ action taken from the
CLI and a timer that fires after a restart behave exactly like anything done by the running hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from devicekit.protocol import AckStage, AlarmKind, Position
from hub.codes import code_matches
from hub.escalation import Condition, PolicyDocument, Stage, policy_for
from hub.models import (
    CLOSED_STATES,
    PUBLIC_ROLES,
    Alarm,
    AlarmEvent,
    AlarmState,
    Defender,
    Delivery,
    DeviceAck,
    Role,
    Timer,
)
from hub.outbox import facts_for, queue
from hub.recipients import (
    Target,
    delivery_target_key,
    hq_targets,
    is_training_alarm,
    target_by_key,
    targets_for_roles,
)

FIRST_MESSAGE_KINDS = ("alarm", "alarm_nearby", "public", "test")


class LifecycleError(ValueError):
    """An HQ action that does not apply to the alarm's state; the message says why."""


@dataclass(frozen=True)
class LifecycleSettings:
    ack_base_url: str | None = None
    responder_max_age: timedelta = timedelta(minutes=30)


def event(
    session: Session,
    alarm: Alarm,
    kind: str,
    detail: str = "",
    actor: str = "hub",
    at: datetime | None = None,
) -> None:
    values: dict[str, object] = {
        "alarm_pk": _pk(alarm),
        "kind": kind,
        "actor": actor,
        "detail": detail,
    }
    if at is not None:
        values["at"] = at
    session.add(AlarmEvent(**values))  # type: ignore[arg-type]


def device_ack(session: Session, alarm: Alarm, stage: AckStage, now: datetime) -> None:
    session.add(
        DeviceAck(
            device_id=alarm.device_id, alarm_id=alarm.alarm_id, stage=stage.value, created_at=now
        )
    )


class Lifecycle:
    def __init__(self, settings: LifecycleSettings | None = None) -> None:
        self.settings = settings or LifecycleSettings()

    # -- start and stages ---------------------------------------------------------------------

    def start(self, session: Session, alarm: Alarm, defender: Defender, now: datetime) -> None:
        """Run the stages due at once and schedule the rest (called in the alarm's commit)."""
        if alarm.kind != AlarmKind.TEST.value and is_training_alarm(session, alarm):
            event(session, alarm, "training", f"a training wristband sent {alarm.kind}", at=now)
            alarm.kind = AlarmKind.TEST.value  # whatever a training kit claims, it is training
        policy = policy_for(session, defender)
        for index, stage in enumerate(policy.stages):
            if stage.condition in (Condition.IMMEDIATELY, Condition.UNACKNOWLEDGED):
                self._schedule_stage(session, alarm, defender, index, stage, now)

    def _schedule_stage(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        index: int,
        stage: Stage,
        now: datetime,
    ) -> None:
        if stage.delay_s == 0 and stage.condition is not Condition.UNACKNOWLEDGED:
            session.add(
                Timer(
                    kind="stage",
                    due_at=now,
                    alarm_pk=_pk(alarm),
                    payload={"stage": index},
                    done_at=now,
                    outcome="run at once",
                )
            )
            self.run_stage(session, alarm, defender, index, now)
            return
        session.add(
            Timer(
                kind="stage",
                due_at=now + timedelta(seconds=stage.delay_s),
                alarm_pk=_pk(alarm),
                payload={"stage": index},
            )
        )

    def run_stage(
        self, session: Session, alarm: Alarm, defender: Defender, index: int, now: datetime
    ) -> str:
        """Notify the stage's recipients; returns what happened, for the timer's outcome."""
        policy = policy_for(session, defender)
        if index >= len(policy.stages):
            return "skipped: the policy no longer has this stage"
        stage = policy.stages[index]
        if AlarmState(alarm.state) in CLOSED_STATES:
            return f"skipped: alarm {alarm.state}"
        if stage.condition is Condition.UNACKNOWLEDGED and alarm.acknowledged_at is not None:
            event(session, alarm, "stage_skipped", f"{stage.name}: already acknowledged", at=now)
            return "skipped: acknowledged"
        roles = stage.roles
        if alarm.kind == AlarmKind.TEST.value:
            roles = tuple(role for role in roles if role not in PUBLIC_ROLES)
        elif not defender.allow_public_broadcast and any(r in PUBLIC_ROLES for r in roles):
            roles = tuple(role for role in roles if role not in PUBLIC_ROLES)
            event(
                session,
                alarm,
                "public_refused",
                f"{stage.name}: the defender's policy does not allow public broadcast",
                at=now,
            )
        targets = (
            targets_for_roles(session, alarm, defender, roles, now, self.settings.responder_max_age)
            if roles
            else []
        )
        if alarm.kind == AlarmKind.TEST.value:
            targets = [t for t in targets if t.receives_tests]
        queued = sum(
            self._first_message(session, alarm, defender, t, index, stage.name, now)
            for t in targets
        )
        event(session, alarm, "stage", f"{stage.name}: {queued} recipient(s)", at=now)
        if stage.reminder_interval_s and queued:
            session.add(
                Timer(
                    kind="reminder",
                    due_at=now + timedelta(seconds=stage.reminder_interval_s),
                    alarm_pk=_pk(alarm),
                    payload={"stage": index, "round": 1},
                )
            )
        return f"ran: {queued} recipient(s)"

    def _first_message(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        target: Target,
        stage: int,
        stage_name: str,
        now: datetime,
    ) -> bool:
        if alarm.kind == AlarmKind.TEST.value:
            kind = "test"
        elif target.role in PUBLIC_ROLES:
            kind = "public"
        elif target.role is Role.NEARBY:
            kind = "alarm_nearby"
        else:
            kind = "alarm"
        facts = facts_for(
            alarm,
            defender,
            at=now,
            distance_m=target.distance_m,
            stage=stage_name,
        )
        ack_url = None if target.role in PUBLIC_ROLES else self.settings.ack_base_url
        delivery = queue(
            session,
            f"A{alarm.id}:first:{target.key}",
            target,
            kind,
            facts,
            alarm_pk=_pk(alarm),
            stage=stage,
            ack_base_url=ack_url,
        )
        return delivery is not None

    def run_reminder(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        stage: int,
        round_: int,
        now: datetime,
    ) -> str:
        """Remind every recipient of ``stage`` who has not acknowledged; schedule the next round."""
        if AlarmState(alarm.state) in CLOSED_STATES:
            return f"stopped: alarm {alarm.state}"
        stages = policy_for(session, defender).stages
        interval = stages[stage].reminder_interval_s if stage < len(stages) else None
        facts = facts_for(
            alarm, defender, at=now, stage=stages[stage].name if stage < len(stages) else None
        )
        acknowledged = self._acknowledged_targets(session, alarm)
        sent = 0
        for delivery in self._first_deliveries(session, alarm, stage):
            key = delivery_target_key(delivery)
            if key in acknowledged:
                continue
            target = target_by_key(session, key)
            if target is None:
                continue
            queued = queue(
                session,
                f"A{alarm.id}:reminder{round_}:{key}",
                target,
                "reminder",
                facts,
                alarm_pk=_pk(alarm),
                stage=stage,
                ack_base_url=self.settings.ack_base_url,
            )
            sent += queued is not None
        if sent and interval:
            session.add(
                Timer(
                    kind="reminder",
                    due_at=now + timedelta(seconds=interval),
                    alarm_pk=_pk(alarm),
                    payload={"stage": stage, "round": round_ + 1},
                )
            )
        return f"reminded {sent}"

    # -- acknowledgement and HQ actions -------------------------------------------------------

    def acknowledge(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        actor: str,
        now: datetime,
        delivery: Delivery | None = None,
    ) -> None:
        """``actor`` is on it: stop their reminders, tell the device and HQ (first time only)."""
        if AlarmState(alarm.state) in CLOSED_STATES:
            raise LifecycleError(f"alarm A{alarm.id} is already {alarm.state}")
        if delivery is not None:
            key = delivery_target_key(delivery)
            for row in session.exec(select(Delivery).where(Delivery.alarm_pk == alarm.id)):
                if delivery_target_key(row) == key and row.acknowledged_at is None:
                    row.acknowledged_at = now
                    session.add(row)
        event(session, alarm, "acknowledged", f"{actor} is on it", actor=actor, at=now)
        first = alarm.acknowledged_at is None
        if first:
            alarm.acknowledged_at = now
            if alarm.state in (AlarmState.RECEIVED, AlarmState.NOTIFIED):
                alarm.state = AlarmState.ACKNOWLEDGED.value
            session.add(alarm)
            device_ack(session, alarm, AckStage.RESPONDER_COMING, now)
        facts = facts_for(alarm, defender, at=now, actor=actor)
        for target in hq_targets(session, alarm):
            if delivery is None or target.key != delivery_target_key(delivery):
                queue(
                    session,
                    f"A{alarm.id}:acknowledged:{actor}:{target.key}",
                    target,
                    "acknowledged",
                    facts,
                    alarm_pk=_pk(alarm),
                )

    def verify(
        self, session: Session, alarm: Alarm, defender: Defender, actor: str, now: datetime
    ) -> None:
        """HQ confirms the alarm is real: unlocks the stages that wait for verification."""
        self._require_open(alarm)
        if alarm.verified_at is not None:
            raise LifecycleError(f"alarm A{alarm.id} was already verified")
        alarm.verified_at = now
        alarm.state = AlarmState.VERIFIED.value
        session.add(alarm)
        event(session, alarm, "verified", "verified by HQ", actor=actor, at=now)
        policy = policy_for(session, defender)
        for index, stage in enumerate(policy.stages):
            if stage.condition is Condition.VERIFIED:
                self._schedule_stage(session, alarm, defender, index, stage, now)

    def escalate_now(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        actor: str,
        now: datetime,
        reason: str = "escalated by HQ",
    ) -> int:
        """Run every stage still waiting for its delay (not those waiting for verification)."""
        self._require_open(alarm)
        event(session, alarm, "escalated", reason, actor=actor, at=now)
        pending = session.exec(
            select(Timer).where(
                Timer.alarm_pk == alarm.id, Timer.kind == "stage", col(Timer.done_at).is_(None)
            )
        ).all()
        for timer in pending:
            timer.done_at = now
            timer.outcome = "run early: " + self.run_stage(
                session,
                alarm,
                defender,
                int(str(timer.payload["stage"])),
                now,
            )
            session.add(timer)
        return len(pending)

    def close(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        state: AlarmState,
        actor: str,
        now: datetime,
    ) -> None:
        """Resolve, mark a false alarm, or cancel: stop timers, tell the device and all told."""
        self._require_open(alarm)
        alarm.state = state.value
        alarm.closed_at = now
        session.add(alarm)
        event(session, alarm, state.value, f"{state.value} by {actor}", actor=actor, at=now)
        for timer in session.exec(
            select(Timer).where(Timer.alarm_pk == alarm.id, col(Timer.done_at).is_(None))
        ):
            timer.done_at = now
            timer.outcome = f"cancelled: alarm {state.value}"
            session.add(timer)
        stage = AckStage.CANCELLED if state is AlarmState.CANCELLED else AckStage.RESOLVED
        device_ack(session, alarm, stage, now)
        for key in sorted(self._told_targets(session, alarm)):
            target = target_by_key(session, key)
            if target is None:
                continue
            # Closing texts may be published: a public channel never names a staff member.
            who = "HQ" if target.role in PUBLIC_ROLES else actor
            queue(
                session,
                f"A{alarm.id}:{state.value}:{key}",
                target,
                state.value,
                facts_for(alarm, defender, at=now, actor=who),
                alarm_pk=_pk(alarm),
            )

    def cancel_request(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        code: str,
        now: datetime,
        seq: int = 0,
    ) -> str:
        """The defender entered a code on the wristband. Returns "cancelled", "duress" or
        "refused". A duress code looks exactly like a cancel to the device and to whoever holds
        it, while the alarm escalates at once, marked as duress for HQ."""
        if AlarmState(alarm.state) in CLOSED_STATES:
            return "closed"
        if code_matches(code, defender.duress_code_hash):
            if not alarm.duress:
                alarm.duress = True
                session.add(alarm)
                event(session, alarm, "duress", "duress code entered: escalating", at=now)
                device_ack(session, alarm, AckStage.CANCELLED, now)
                self.escalate_now(session, alarm, defender, "hub", now, "duress code entered")
                facts = facts_for(alarm, defender, at=now)
                for target in hq_targets(session, alarm):
                    queue(
                        session,
                        f"A{alarm.id}:duress:{target.key}",
                        target,
                        "alarm",
                        facts,
                        alarm_pk=_pk(alarm),
                        ack_base_url=self.settings.ack_base_url,
                    )
            else:
                device_ack(session, alarm, AckStage.CANCELLED, now)
            return "duress"
        if code_matches(code, defender.cancel_code_hash):
            self.close(session, alarm, defender, AlarmState.CANCELLED, "defender", now)
            return "cancelled"
        reason = "wrong code" if defender.cancel_code_hash else "no cancel code is set"
        detail = f"cancel seq {seq}: {reason}"
        seen = session.exec(
            select(AlarmEvent.id).where(
                AlarmEvent.alarm_pk == alarm.id,
                AlarmEvent.kind == "cancel_refused",
                AlarmEvent.detail == detail,
            )
        ).first()
        if seen is None:  # the device re-sends the same cancel until it is settled
            event(
                session, alarm, "cancel_refused", detail, actor=f"device:{alarm.device_id}", at=now
            )
        return "refused"

    def location_update(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        seq: int,
        position: Position,
        now: datetime,
    ) -> int:
        """Pass a new wristband position to everyone who acknowledged the alarm."""
        if AlarmState(alarm.state) in CLOSED_STATES:
            return 0
        facts = facts_for(
            alarm,
            defender,
            at=now,
            lat=position.lat,
            lon=position.lon,
            accuracy_m=position.accuracy_m,
            fix_ts=position.fix_ts,
        )
        event(
            session,
            alarm,
            "location",
            f"seq {seq}, accuracy ±{position.accuracy_m:.0f} m",
            actor=f"device:{alarm.device_id}",
            at=now,
        )
        sent = 0
        for key in sorted(self._acknowledged_targets(session, alarm)):
            target = target_by_key(session, key)
            if target is not None:
                sent += (
                    queue(
                        session,
                        f"A{alarm.id}:location{seq}:{key}",
                        target,
                        "location_update",
                        facts,
                        alarm_pk=_pk(alarm),
                    )
                    is not None
                )
        return sent

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _require_open(alarm: Alarm) -> None:
        if AlarmState(alarm.state) in CLOSED_STATES:
            raise LifecycleError(f"alarm A{alarm.id} is already {alarm.state}")

    @staticmethod
    def _first_deliveries(session: Session, alarm: Alarm, stage: int) -> list[Delivery]:
        query = select(Delivery).where(
            Delivery.alarm_pk == alarm.id,
            Delivery.stage == stage,
            col(Delivery.kind).in_(FIRST_MESSAGE_KINDS),
            Delivery.channel_index == 0,
        )
        return list(session.exec(query.order_by(col(Delivery.id))))

    @staticmethod
    def _acknowledged_targets(session: Session, alarm: Alarm) -> set[str]:
        rows = session.exec(
            select(Delivery).where(
                Delivery.alarm_pk == alarm.id, col(Delivery.acknowledged_at).is_not(None)
            )
        )
        return {delivery_target_key(row) for row in rows}

    @staticmethod
    def _told_targets(session: Session, alarm: Alarm) -> set[str]:
        rows = session.exec(
            select(Delivery).where(
                Delivery.alarm_pk == alarm.id, col(Delivery.kind).in_(FIRST_MESSAGE_KINDS)
            )
        )
        return {delivery_target_key(row) for row in rows}


def _pk(alarm: Alarm) -> int:
    assert alarm.id is not None, "the alarm must be flushed first"
    return alarm.id


__all__ = ["Lifecycle", "LifecycleError", "LifecycleSettings", "PolicyDocument"]
