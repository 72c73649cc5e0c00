"""Training mode: real training wristbands for an event's defenders, and their test alarms.

A kit is an ordinary device (``train-<event id>-<registration id>``) of the defender, with its
own broker account, so a participant can pull it with devicekit's wristband or simulator and see
the whole path work. The device is marked a training wristband (``Device.training_event_id``):
whatever it sends is a ``test`` alarm that reaches only that participant, on their
registration's channel — never the defender's contacts, HQ, responders, the press or the public
(``hub.recipients``). Ending training (or cancelling the registration) makes the device inactive
and removes its broker account.

Handing out kits hands out device credentials: the API allows it to operations roles only.
Passwords and keys are returned once and never stored in clear or logged.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.accounts import PasswordFile, generate_password
from broker.config import BrokerSettings
from broker.launcher import signal_running_broker
from devicekit import protocol
from devicekit.signing import new_key
from hub.admin import AdminError, add_device
from hub.clock import Clock
from hub.conference.errors import ConferenceConflict, ConferenceNotFound
from hub.conference.tables import ConferenceEvent, ConferenceRegistration, RegistrationStatus
from hub.lifecycle import Lifecycle
from hub.models import Device
from hub.store import Store, UnknownDevice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kit:
    registration_id: int
    device_id: str
    password: str | None = None  #: only when just handed out
    key: str | None = None  #: the signing key, only when just handed out


def kit_device_id(event_id: int, registration_id: int) -> str:
    return f"train-{event_id}-{registration_id}"


def _event(session: Session, event_id: int) -> ConferenceEvent:
    event = session.get(ConferenceEvent, event_id)
    if event is None:
        raise ConferenceNotFound(f"no event {event_id}")
    return event


def _active_defender_registrations(session: Session, event_id: int) -> list[ConferenceRegistration]:
    query = (
        select(ConferenceRegistration)
        .where(
            ConferenceRegistration.event_id == event_id,
            ConferenceRegistration.status == RegistrationStatus.REGISTERED.value,
            col(ConferenceRegistration.defender_id).is_not(None),
        )
        .order_by(col(ConferenceRegistration.id))
    )
    return list(session.exec(query))


def kits(session: Session, event_id: int) -> list[Kit]:
    """The kits of the event's active registrations (without passwords)."""
    return [
        Kit(row.id or 0, row.training_device_id)
        for row in _active_defender_registrations(session, event_id)
        if row.training_device_id is not None
    ]


def start_training(engine: Engine, event_id: int, broker_data_dir: Path | None) -> list[Kit]:
    """Turn training on and hand a kit to every active defender registration without a working
    one; returns every kit, with passwords for those handed out now. Safe to call again."""
    if broker_data_dir is None:
        raise ConferenceConflict(
            "this hub has no [broker] data_dir, so it cannot create training wristbands"
        )
    with Session(engine) as session:
        event = _event(session, event_id)
        event.training_active = True
        session.add(event)
        session.commit()
        needing = [
            (row.id or 0, row.defender_id or 0)
            for row in _active_defender_registrations(session, event_id)
            if row.training_device_id is None or not _device_active(session, row)
        ]
    handed = {
        registration_id: _hand_kit(engine, event_id, registration_id, defender_id, broker_data_dir)
        for registration_id, defender_id in needing
    }
    if handed:
        log.info("event %s: %d training wristband(s) handed out", event_id, len(handed))
    with Session(engine) as session:
        return [
            Kit(kit.registration_id, kit.device_id, *handed.get(kit.registration_id, (None, None)))
            for kit in kits(session, event_id)
        ]


def _device_active(session: Session, row: ConferenceRegistration) -> bool:
    device = session.get(Device, row.training_device_id)
    return device is not None and device.active


def _hand_kit(
    engine: Engine, event_id: int, registration_id: int, defender_id: int, data_dir: Path
) -> tuple[str, str]:
    """A new device with its broker account, or a retired kit of this defender made to work
    again with a new password and key (training restarted, or a call cut short). Returns the
    password and the signing key.

    Two calls at the same moment may both hand out a kit: the credentials in the later response
    are the ones that work.
    """
    device_id = kit_device_id(event_id, registration_id)
    with Session(engine) as session:
        exists = session.get(Device, device_id) is not None
    if not exists:
        try:
            creds = add_device(engine, device_id, defender_id, data_dir)
            password, key = creds.password, creds.key
        except (AdminError, IntegrityError) as exc:  # perhaps registered by a parallel call
            with Session(engine) as session:
                if session.get(Device, device_id) is None:  # not a race: something else is wrong
                    reason = str(exc) if isinstance(exc, AdminError) else "the database refused it"
                    raise ConferenceConflict(f"cannot hand out {device_id}: {reason}") from None
            password, key = _reissue(engine, device_id, defender_id, data_dir)
    else:
        password, key = _reissue(engine, device_id, defender_id, data_dir)
    with Session(engine) as session:
        registration = session.get(ConferenceRegistration, registration_id)
        device = session.get(Device, device_id)
        assert registration is not None and device is not None
        registration.training_device_id = device_id
        # Marks it a training wristband: its alarms reach only this participant (hub.recipients).
        device.training_event_id = event_id
        session.add_all([registration, device])
        session.commit()
    return password, key


def _reissue(engine: Engine, device_id: str, defender_id: int, data_dir: Path) -> tuple[str, str]:
    with Session(engine) as session:
        device = session.get(Device, device_id)
        assert device is not None
        if device.defender_id != defender_id:
            raise ConferenceConflict(f"device id {device_id} belongs to another defender's device")
        password = generate_password()
        settings = BrokerSettings(data_dir=data_dir)
        PasswordFile(settings.password_file).set(device_id, password)
        device.active = True
        # A new key starts a new sequence: the marks of the old key do not apply to it.
        device.key, device.alarm_seq, device.telemetry_seq = new_key(), None, None
        key = device.key
        session.add(device)
        session.commit()
    signal_running_broker(settings)
    return password, key


def end_training(engine: Engine, event_id: int, broker_data_dir: Path | None) -> None:
    """Training off: every kit of the event is retired (inactive, broker account removed)."""
    with Session(engine) as session:
        event = _event(session, event_id)
        event.training_active = False
        session.add(event)
        session.commit()
        query = select(ConferenceRegistration.training_device_id).where(
            ConferenceRegistration.event_id == event_id,
            col(ConferenceRegistration.training_device_id).is_not(None),
        )
        device_ids = [device_id for device_id in session.exec(query) if device_id is not None]
    retire_kits(engine, device_ids, broker_data_dir)
    log.info("event %s: training ended, %d wristband(s) retired", event_id, len(device_ids))


def retire_kits(engine: Engine, device_ids: Iterable[str], broker_data_dir: Path | None) -> None:
    """Make the devices inactive (the hub refuses their messages) and remove their accounts
    (the broker refuses their logins once it has reloaded)."""
    device_ids = list(device_ids)
    with Session(engine) as session:
        for device_id in device_ids:
            device = session.get(Device, device_id)
            if device is not None and device.active:
                device.active = False
                session.add(device)
        session.commit()
    if broker_data_dir is None or not device_ids:
        return
    settings = BrokerSettings(data_dir=broker_data_dir)
    accounts = PasswordFile(settings.password_file)
    removed = [device_id for device_id in device_ids if accounts.remove(device_id)]
    if removed:
        signal_running_broker(settings)


def run_training_alarm(
    engine: Engine,
    lifecycle: Lifecycle,
    clock: Clock,
    event_id: int,
    registration_id: int,
    actor: str,
) -> int:
    """Raise a ``test`` alarm from the registration's kit as if the wristband had sent it: the
    same store function as the hub's ingest, so escalation treats it as any test alarm.
    Returns the alarm's id; the caller wakes the hub to send it."""
    with Session(engine) as session:
        event = _event(session, event_id)
        row = session.get(ConferenceRegistration, registration_id)
        if row is None or row.event_id != event_id:
            raise ConferenceNotFound(f"no registration {registration_id} in event {event_id}")
        if not event.training_active:
            raise ConferenceConflict(
                f"training is off for event {event_id}: start it with POST .../training"
            )
        if not row.active or row.training_device_id is None:
            raise ConferenceConflict(
                f"registration {registration_id} has no training wristband "
                "(guests and cancelled registrations have none)"
            )
        device = session.get(Device, row.training_device_id)
        if device is None or not device.active:
            raise ConferenceConflict(f"the training wristband of {registration_id} is retired")
        device_id, seq = device.id, (device.last_seq or 0) + 1
    message = protocol.Alarm(
        alarm_id=f"training-{secrets.token_hex(8)}",
        kind=protocol.AlarmKind.TEST,
        ts=clock.now(),
        seq=seq,
    )
    store = Store(engine, lifecycle, clock)
    try:
        outcome = store.record_alarm(device_id, message, from_device=False)
    except UnknownDevice as exc:  # retired meanwhile
        raise ConferenceConflict(str(exc)) from None
    detail = f"training alarm for event {event_id}, registration {registration_id}"
    store.record_event(outcome.alarm_pk, "training", detail, actor=actor)
    log.info("event %s: training alarm A%s run by %s", event_id, outcome.alarm_pk, actor)
    return outcome.alarm_pk
