"""Who must hear of an alarm: HQ and the defender's contacts, each with a message in their language.

Nearby responders and staged escalation policies build on this (see the issues for alarm
context and escalation).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, or_, select

from hub.messages import AlarmFacts, RenderedMessage, render_alarm
from hub.models import Alarm, Contact, Defender


@dataclass(frozen=True)
class Recipient:
    contact: Contact
    message: RenderedMessage


def alarm_ref(alarm: Alarm) -> str:
    """The short reference HQ and recipients use when they talk about an alarm."""
    return f"A{alarm.id}"


def facts_of(alarm: Alarm, defender: Defender) -> AlarmFacts:
    return AlarmFacts(
        ref=alarm_ref(alarm),
        kind=alarm.kind,
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


def hq_contacts(session: Session) -> list[Contact]:
    query = select(Contact).where(Contact.defender_id == None, Contact.active)  # noqa: E711
    return list(session.exec(query.order_by(Contact.id)))  # type: ignore[arg-type]


def resolve_recipients(session: Session, alarm: Alarm, defender: Defender) -> list[Recipient]:
    """HQ contacts and the defender's active contacts, each with a rendered message."""
    query = (
        select(Contact)
        .where(or_(Contact.defender_id == None, Contact.defender_id == defender.id))  # noqa: E711
        .where(Contact.active)
        .order_by(Contact.id)  # type: ignore[arg-type]
    )
    facts = facts_of(alarm, defender)
    return [
        Recipient(contact, render_alarm(facts, contact.language)) for contact in session.exec(query)
    ]
