"""The alarm's lifecycle: stages, reminders, acknowledgement, HQ actions, cancel and duress.

received -> notified -> acknowledged -> verified -> resolved | false_alarm | cancelled

Every function works inside the caller's session and transaction and takes ``now`` from the
hub's clock. What must happen later is a ``Timer`` row; what the device must hear is a
``DeviceAck`` row; what people must read is a ``Delivery`` row. So an HQ action taken from the
CLI and a timer that fires after a restart behave exactly like anything done by the running hub.

Recipients come from ``hub.recipients``, which never returns a deactivated contact or a responder
taken off call. Press and public channels (``PUBLIC_ROLES``) get the public texts only: never an
acknowledgement link, a reminder or a live position. A duress code looks like a real cancel to
everyone outside HQ (``cancel_request``; what the API may show: ``hub.disclosure``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from devicekit.protocol import AckStage, AlarmKind, Position
from hub.codes import code_matches
from hub.disclosure import closing_key, sees_cancelled
from hub.escalation import Condition, PolicyDocument, Stage, policy_for
from hub.messages import MessageFacts
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
    #: An acknowledgement link works this long after its alarm closed (hub.acklinks).
    ack_link_grace: timedelta = timedelta(hours=24)


def event(
    session: Session,
    alarm: Alarm,
    kind: str,
    detail: str = "",
    actor: str = "hub",
    at: datetime | None = None,
) -> None:
    """Add to the alarm's timeline; after a duress code, for HQ only (hub.disclosure)."""
    values: dict[str, object] = {
        "alarm_pk": _pk(alarm),
        "kind": kind,
        "actor": actor,
        "detail": detail,
        "hq_only": alarm.duress,
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
        elif alarm.duress and any(r in PUBLIC_ROLES for r in roles):
            # Anything public after a duress code would tell the world it was no real cancel.
            roles = tuple(role for role in roles if role not in PUBLIC_ROLES)
            event(session, alarm, "public_withheld", f"{stage.name}: duress code entered", at=now)
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
        """Remind every recipient of ``stage`` who has not acknowledged; schedule the next round.

        Never a press or public channel (a reminder asks its reader to acknowledge, and shows the
        position), nor anyone deactivated since, nor anyone told the alarm was cancelled.
        """
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
            target = None if key in acknowledged else _privately_told(session, alarm, key)
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
            if not alarm.duress:  # after a duress code the wristband hears only "cancelled"
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
        """Resolve, mark a false alarm, or cancel: stop timers, tell the device and all told.

        After a duress code, the device and everyone who was told "cancelled" then have heard
        their last word about this alarm, as after a real cancel: only HQ hears of the close.
        """
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
        if not alarm.duress:
            stage = AckStage.CANCELLED if state is AlarmState.CANCELLED else AckStage.RESOLVED
            device_ack(session, alarm, stage, now)
        facts = facts_for(alarm, defender, at=now, actor=actor)
        self._tell_told(session, alarm, state.value, facts)

    def _tell_told(self, session: Session, alarm: Alarm, what: str, facts: MessageFacts) -> None:
        """Send the closing message ``what`` to everyone told of the alarm who may still
        receive, except those who must see it as cancelled already (``hub.disclosure``)."""
        for key in sorted(self._told_targets(session, alarm)):
            target = target_by_key(session, key)
            if target is None or sees_cancelled(session, alarm, key, target.role):
                continue
            # Closing texts may be published: a public channel never names a staff member.
            who = "HQ" if target.role in PUBLIC_ROLES else facts.actor
            queue(
                session,
                closing_key(alarm, what, key),
                target,
                what,
                dataclasses.replace(facts, actor=who),
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
        """The defender entered a code on the wristband. Returns "cancelled", "duress",
        "closed" or "refused".

        A duress code looks exactly like a cancel to the device and to everyone outside HQ: the
        wristband hears "cancelled" (and nothing after), everyone told of the alarm gets the
        very "cancelled" message a real cancel sends (and, except HQ, nothing after: no
        reminder, no position, and their links say "cancelled"), while HQ is told DURESS and
        the stages still waiting run at once (never a public one). A cancel of an alarm that
        is closed, or that a duress code already "cancelled", is answered with "cancelled"
        again (every copy of a cancel gets its answer: PROTOCOL.md section 6) and changes
        nothing: after a duress code, not even the real cancel code can close the alarm; only
        HQ can.
        """
        if AlarmState(alarm.state) in CLOSED_STATES or alarm.duress:
            device_ack(session, alarm, device_stage(alarm), now)
            if alarm.duress and AlarmState(alarm.state) not in CLOSED_STATES:
                detail = f"cancel seq {seq} after the duress code: answered, alarm stays open"
                self._event_once(session, alarm, "cancel_after_duress", detail, now)
            return "duress" if alarm.duress else "closed"
        if code_matches(code, defender.duress_code_hash):
            self._duress(session, alarm, defender, now)
            return "duress"
        if code_matches(code, defender.cancel_code_hash):
            self.close(session, alarm, defender, AlarmState.CANCELLED, "defender", now)
            return "cancelled"
        reason = "wrong code" if defender.cancel_code_hash else "no cancel code is set"
        self._event_once(session, alarm, "cancel_refused", f"cancel seq {seq}: {reason}", now)
        return "refused"

    def _duress(self, session: Session, alarm: Alarm, defender: Defender, now: datetime) -> None:
        """What a real cancel shows to everyone; then, for HQ only, a duress alarm and the
        escalation.

        The "cancelled" messages and timeline entry come first, recorded as a real cancel
        records them; everything after the code is marked for HQ only (``hub.disclosure``).
        """
        cancelled = AlarmState.CANCELLED.value
        looks_cancelled = facts_for(alarm, defender, at=now, actor="defender")
        self._tell_told(session, alarm, cancelled, looks_cancelled)
        event(session, alarm, cancelled, f"{cancelled} by defender", actor="defender", at=now)
        device_ack(session, alarm, AckStage.CANCELLED, now)
        alarm.duress = True
        alarm.duress_at = now
        session.add(alarm)
        event(session, alarm, "duress", "duress code entered: escalating", at=now)
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

    @staticmethod
    def _event_once(session: Session, alarm: Alarm, kind: str, detail: str, now: datetime) -> None:
        """One timeline entry per distinct ``detail`` (the device re-sends a cancel until it is
        answered)."""
        seen = session.exec(
            select(AlarmEvent.id).where(
                AlarmEvent.alarm_pk == alarm.id,
                AlarmEvent.kind == kind,
                AlarmEvent.detail == detail,
            )
        ).first()
        if seen is None:
            event(session, alarm, kind, detail, actor=f"device:{alarm.device_id}", at=now)

    def location_update(
        self,
        session: Session,
        alarm: Alarm,
        defender: Defender,
        seq: int,
        position: Position,
        now: datetime,
    ) -> int:
        """Pass a new wristband position to everyone who acknowledged the alarm (as a recipient:
        by their link) and may still receive it."""
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
            target = _privately_told(session, alarm, key)
            if target is None:
                continue
            queued = queue(
                session,
                f"A{alarm.id}:location{seq}:{key}",
                target,
                "location_update",
                facts,
                alarm_pk=_pk(alarm),
            )
            sent += queued is not None
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


def _privately_told(session: Session, alarm: Alarm, key: str) -> Target | None:
    """The recipient ``key`` if they may still get private news of the alarm (a reminder, a
    position): None for a press or public channel, for anyone deactivated or taken off call
    since, and for anyone who must see the alarm as cancelled (``hub.disclosure``)."""
    target = target_by_key(session, key)
    if target is None or target.role in PUBLIC_ROLES:
        return None
    return None if sees_cancelled(session, alarm, key, target.role) else target


def device_stage(alarm: Alarm) -> AckStage:
    """What the wristband is told of a stored alarm now (a copy of it, a cancel of it). After a
    duress code it is "cancelled" for good, as after a real cancel."""
    if alarm.duress or alarm.state == AlarmState.CANCELLED:
        return AckStage.CANCELLED
    if alarm.state in (AlarmState.RESOLVED, AlarmState.FALSE_ALARM):
        return AckStage.RESOLVED
    if alarm.acknowledged_at is not None:
        return AckStage.RESPONDER_COMING
    if alarm.state == AlarmState.RECEIVED:
        return AckStage.RECEIVED
    return AckStage.NOTIFIED


def _pk(alarm: Alarm) -> int:
    assert alarm.id is not None, "the alarm must be flushed first"
    return alarm.id


__all__ = ["Lifecycle", "LifecycleError", "LifecycleSettings", "PolicyDocument"]
