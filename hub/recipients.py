"""Who a stage reaches: contacts by role (the defender's own and organisation-wide) and, for the
``nearby`` role, responders whose position is fresh and within their radius of the alarm.

Every path that picks a recipient goes through this module, and none of them returns a contact
that was deactivated or deleted, or a responder taken off call: from that moment they get nothing
more — no stage, reminder, location update, closing message or fallback channel — and what was
already queued for them is cancelled when it comes up (``recipient_stopped``).

An alarm from a training wristband (``Device.training_event_id``) reaches only the participant
who holds that wristband, whatever its policy, its kind or the roles asked for: a training kit
must never raise a real alarm, or alert a defender's contacts, HQ or responders. The participant
is a recipient like any other (a ``registration`` target: sent, retried, reminded, told of the
close); a registration stops receiving when it is cancelled, and a training alarm's messages
also stop when its event's training ends. Announcements to a registration stop when it is
cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement
from sqlmodel import Session, col, or_, select

from hub.conference.tables import ConferenceEvent, ConferenceRegistration, RegistrationStatus
from hub.models import Alarm, Contact, Defender, Delivery, Device, Responder, Role


@dataclass(frozen=True)
class Target:
    """One recipient with every channel to try, in order."""

    kind: str  #: "contact", "responder" or "registration" (a training alarm's participant)
    id: int
    name: str
    role: Role
    language: str
    urls: tuple[str, ...]
    receives_tests: bool = False
    distance_m: float | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


def _contact_target(contact: Contact) -> Target:
    assert contact.id is not None
    return Target(
        "contact",
        contact.id,
        contact.name,
        Role(contact.role),
        contact.language,
        (contact.channel_url, *contact.fallback_urls),
        contact.receives_tests,
    )


def _responder_target(responder: Responder, distance_m: float) -> Target:
    assert responder.id is not None
    return Target(
        "responder",
        responder.id,
        responder.name,
        Role.NEARBY,
        responder.language,
        (responder.channel_url, *responder.fallback_urls),
        responder.receives_tests,
        distance_m,
    )


def contacts_with_roles(
    session: Session, defender_id: int | None, roles: tuple[Role, ...]
) -> list[Target]:
    """Active contacts of the defender, and organisation-wide ones, whose role is in ``roles``."""
    wanted = [role.value for role in roles if role is not Role.NEARBY]
    if not wanted:
        return []
    owner: ColumnElement[bool] = col(Contact.defender_id).is_(None)
    if defender_id is not None:
        owner = or_(owner, col(Contact.defender_id) == defender_id)
    query = (
        select(Contact)
        .where(owner, Contact.active, col(Contact.role).in_(wanted))
        .order_by(col(Contact.id))
    )
    return [_contact_target(contact) for contact in session.exec(query)]


def nearby_responders(
    session: Session, alarm: Alarm, now: datetime, max_age: timedelta
) -> list[Target]:
    """Responders near the alarm's position, nearest first (none when there is no fix)."""
    if alarm.lat is None or alarm.lon is None:
        return []
    from hub.geo import nearest_responders

    responders = list(session.exec(select(Responder).where(Responder.available)))
    found = nearest_responders(responders, alarm.lat, alarm.lon, now, max_age)
    return [_responder_target(responder, distance) for responder, distance in found]


def is_training_alarm(session: Session, alarm: Alarm) -> bool:
    """Whether ``alarm`` came from a training wristband (the device says so, not the message)."""
    device = session.get(Device, alarm.device_id)
    return device is not None and device.training_event_id is not None


def _registration_target(registration: ConferenceRegistration) -> Target | None:
    if registration.id is None or registration.channel_url is None:
        return None
    return Target(
        "registration",
        registration.id,
        registration.name,
        Role.PARTICIPANT,
        registration.language,
        (registration.channel_url,),
        receives_tests=True,
    )


def training_targets(session: Session, alarm: Alarm) -> list[Target]:
    """The participant holding the training wristband, on their registration's channel."""
    query = select(ConferenceRegistration).where(
        ConferenceRegistration.training_device_id == alarm.device_id,
        ConferenceRegistration.status == RegistrationStatus.REGISTERED.value,
        col(ConferenceRegistration.channel_url).is_not(None),
    )
    found = (_registration_target(registration) for registration in session.exec(query))
    return [target for target in found if target is not None]


def hq_targets(session: Session, alarm: Alarm) -> list[Target]:
    """HQ's contacts, told of what happens to ``alarm``; nobody for a training alarm."""
    if is_training_alarm(session, alarm):
        return []
    return contacts_with_roles(session, None, (Role.HQ,))


def targets_for_roles(
    session: Session,
    alarm: Alarm,
    defender: Defender,
    roles: tuple[Role, ...],
    now: datetime,
    responder_max_age: timedelta,
) -> list[Target]:
    if is_training_alarm(session, alarm):
        return training_targets(session, alarm)
    targets = contacts_with_roles(session, defender.id, roles)
    if Role.NEARBY in roles:
        targets += nearby_responders(session, alarm, now, responder_max_age)
    return targets


def delivery_target_key(delivery: Delivery) -> str:
    """The :attr:`Target.key` of the recipient a delivery went to (``contact:3``)."""
    if delivery.contact_id is not None:
        return f"contact:{delivery.contact_id}"
    if delivery.registration_id is not None:
        return f"registration:{delivery.registration_id}"
    return f"responder:{delivery.responder_id}"


def target_by_key(session: Session, key: str) -> Target | None:
    """The recipient named by a :attr:`Target.key`, as it is now: None if it was deleted,
    deactivated (a contact) or taken off call (a responder)."""
    kind, _, target_id = key.partition(":")
    return target_of(session, kind, int(target_id)) if target_id.isdigit() else None


def target_of(session: Session, kind: str, target_id: int) -> Target | None:
    """See :func:`target_by_key`. A registration is a training alarm's participant."""
    if kind == "contact":
        contact = session.get(Contact, target_id)
        return _contact_target(contact) if contact is not None and contact.active else None
    if kind == "registration":
        registration = session.get(ConferenceRegistration, target_id)
        if registration is None or _registration_stopped(session, registration, True):
            return None
        return _registration_target(registration)
    responder = session.get(Responder, target_id)
    if responder is None or not responder.available:
        return None
    return _responder_target(responder, 0.0)


def _registration_stopped(
    session: Session, registration: ConferenceRegistration, about_alarm: bool
) -> str | None:
    """Why a registration may receive nothing more (``about_alarm``: a training alarm's
    message, which stops with the event's training too), or None."""
    if not registration.active:
        return "the registration was cancelled"
    if about_alarm:
        event = session.get(ConferenceEvent, registration.event_id)
        if event is None or not event.training_active:
            return "training ended for the event"
    return None


def recipient_stopped(session: Session, delivery: Delivery) -> str | None:
    """Why nothing more may go to the recipient of ``delivery`` (and its link must not work),
    or None while they may receive."""
    if delivery.registration_id is not None:
        registration = session.get(ConferenceRegistration, delivery.registration_id)
        if registration is None:
            return "the registration was deleted"
        return _registration_stopped(session, registration, delivery.alarm_pk is not None)
    if delivery.contact_id is not None:
        contact = session.get(Contact, delivery.contact_id)
        if contact is None:
            return "the contact was deleted"
        return None if contact.active else "the contact was deactivated"
    if delivery.responder_id is not None:
        responder = session.get(Responder, delivery.responder_id)
        if responder is None:
            return "the responder was deleted"
        return None if responder.available else "the responder was taken off call"
    return None
