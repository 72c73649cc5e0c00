"""Queue messages: one ``Delivery`` row per recipient and channel, created at most once per key.

Rows are the outbox: the dispatcher sends them, whoever queued them (ingest, a timer, an HQ
action from the CLI). An acknowledgement link is rendered into messages that ask for one.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlmodel import Session, col, select

from hub.codes import new_token
from hub.messages import MessageFacts, render
from hub.models import CLAIMABLE_STATUSES, Alarm, AlarmEvent, Defender, Delivery, DeliveryStatus
from hub.plugin_api import mask_url
from hub.recipients import Target, delivery_target_key, target_by_key


def facts_for(alarm: Alarm, defender: Defender, **extra: object) -> MessageFacts:
    """What messages about ``alarm`` may say; ``extra`` adds event details (actor, distance...)."""
    values: dict[str, object] = dict(
        ref=f"A{alarm.id}",
        kind="duress" if alarm.duress else alarm.kind,
        defender=defender.name,
        timezone=defender.timezone,
        device_id=alarm.device_id,
        device_ts=alarm.device_ts,
        lat=alarm.lat,
        lon=alarm.lon,
        accuracy_m=alarm.accuracy_m,
        fix_ts=alarm.fix_ts,
        battery=alarm.battery,
    )
    values.update(extra)
    return MessageFacts(**values)  # type: ignore[arg-type]


def failed_attempts(row: Delivery) -> int:
    """The channel's own attempts: every claim except sends cut off by a hub stop."""
    return row.attempts - row.interrupted


def attempts_text(row: Delivery) -> str:
    """``3 attempt(s)``, and how many more sends a hub stop cut off, for HQ's reports."""
    if row.interrupted and row.interrupted == row.attempts:
        return f"{row.attempts} send(s), each cut off by a hub stop"
    text = f"{failed_attempts(row)} attempt(s)"
    return text + (f" (and {row.interrupted} cut off by a hub stop)" if row.interrupted else "")


def key_exists(session: Session, key: str) -> bool:
    return session.exec(select(Delivery.id).where(Delivery.key == key)).first() is not None


def queue(
    session: Session,
    key: str,
    target: Target,
    event: str,
    facts: MessageFacts,
    *,
    alarm_pk: int | None = None,
    rejected_pk: int | None = None,
    device_event_pk: int | None = None,
    stage: int | None = None,
    ack_base_url: str | None = None,
) -> Delivery | None:
    """Queue ``event`` for ``target`` on its first channel, unless ``key`` was queued before.

    With ``ack_base_url`` the message carries a personal "I'm on it" link.
    """
    if key_exists(session, key):
        return None
    token_hash = None
    if ack_base_url:
        token, token_hash = new_token()
        facts = dataclasses.replace(facts, ack_url=f"{ack_base_url.rstrip('/')}/ack/{token}")
    message = render(event, facts, target.language)
    url = target.urls[0]
    alarm = session.get(Alarm, alarm_pk) if alarm_pk is not None else None
    delivery = Delivery(
        key=key,
        alarm_pk=alarm_pk,
        rejected_pk=rejected_pk,
        device_event_pk=device_event_pk,
        contact_id=target.id if target.kind == "contact" else None,
        responder_id=target.id if target.kind == "responder" else None,
        registration_id=target.id if target.kind == "registration" else None,
        role=target.role.value,
        kind=event,
        stage=stage,
        ack_token_hash=token_hash,
        recipient=target.name,
        channel_url=url,
        channel_masked=mask_url(url),
        language=message.language,
        title=message.title,
        body=message.body,
        short=message.short,
        hq_only=alarm is not None and alarm.duress,  # after a duress code: hub.disclosure
    )
    session.add(delivery)
    session.flush()
    return delivery


def cancel(session: Session, row: Delivery, reason: str, now: datetime) -> None:
    """Never send ``row`` (it is pending or waiting for a retry): ``cancelled``, with the
    reason on the row and on its alarm's timeline."""
    row.status = DeliveryStatus.CANCELLED.value
    row.detail = f"cancelled: {reason}"[:1000]
    row.next_try_at = None
    row.claimed_at = None
    row.finished_at = now
    session.add(row)
    if row.alarm_pk is not None:
        text = f"{row.recipient} via {row.channel_masked}: {row.kind} message cancelled, {reason}"
        event = AlarmEvent(
            alarm_pk=row.alarm_pk,
            at=now,
            kind="delivery_cancelled",
            detail=text,
            hq_only=row.hq_only,
        )
        session.add(event)


def cancel_open_deliveries(
    session: Session,
    reason: str,
    now: datetime,
    *,
    contact_id: int | None = None,
    responder_id: int | None = None,
    registration_id: int | None = None,
) -> list[Delivery]:
    """Cancel everything still waiting to go to one contact, responder or registration;
    returns the rows cancelled (``hub.deliveries.stop_deliveries_to`` also ends the first
    rounds this completes).

    A send already under way cannot be called back; the dispatcher cancels, instead of sending,
    whatever else comes up for a stopped recipient (``hub.recipients.recipient_stopped``).
    """
    named = [
        (Delivery.contact_id, contact_id),
        (Delivery.responder_id, responder_id),
        (Delivery.registration_id, registration_id),
    ]
    given = [col(column) == value for column, value in named if value is not None]
    if len(given) != 1:
        raise ValueError("name exactly one contact, responder or registration")
    query = select(Delivery).where(given[0], col(Delivery.status).in_(CLAIMABLE_STATUSES))
    rows = list(session.exec(query.with_for_update()))
    for row in rows:
        cancel(session, row, reason, now)
    return rows


def _next_channel(session: Session, failed: Delivery) -> tuple[Target, int] | None:
    if failed.contact_id is None and failed.responder_id is None:
        return None  # not to a contact or responder (a registration): one channel only
    target = target_by_key(session, delivery_target_key(failed))
    index = failed.channel_index + 1
    if target is None or index >= len(target.urls):
        return None
    return target, index


def has_next_channel(session: Session, failed: Delivery) -> bool:
    """Whether the recipient of ``failed`` has a channel after the one it was sent on."""
    return _next_channel(session, failed) is not None


def queue_fallback(session: Session, failed: Delivery, now: datetime) -> Delivery | None:
    """The same message on the recipient's next channel, if they have one left.

    The new row inherits the message's deadline (``deadline_at``); it is still tried at least
    once, however late (see ``hub.retry``).
    """
    found = _next_channel(session, failed)
    if found is None:
        return None
    target, index = found
    key = f"{failed.key}>fallback{index}"
    queued = session.exec(select(Delivery).where(Delivery.key == key)).first()
    if queued is not None:  # already moved on (a repeated result): not "no channel left"
        return queued
    url = target.urls[index]
    delivery = Delivery(
        key=key,
        alarm_pk=failed.alarm_pk,
        rejected_pk=failed.rejected_pk,
        device_event_pk=failed.device_event_pk,
        contact_id=failed.contact_id,
        responder_id=failed.responder_id,
        registration_id=failed.registration_id,
        role=failed.role,
        kind=failed.kind,
        stage=failed.stage,
        channel_index=index,
        recipient=failed.recipient,
        channel_url=url,
        channel_masked=mask_url(url),
        language=failed.language,
        title=failed.title,
        body=failed.body,
        short=failed.short,
        created_at=now,
        deadline_at=failed.deadline_at,
        hq_only=failed.hq_only,
    )
    session.add(delivery)
    session.flush()
    return delivery
