"""Registration of defenders, devices and contacts (used by the CLI, the demo and the tests).

Registering a device also creates its broker account, so devices are never added by editing
Mosquitto's files by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.accounts import PasswordFile, generate_password
from broker.config import BrokerSettings
from broker.launcher import signal_running_broker
from devicekit.signing import new_key
from devicekit.topics import validate_device_id
from hub.codes import hash_code
from hub.deliveries import stop_deliveries_to
from hub.escalation import load_policy_file, save_policy
from hub.models import Contact, Defender, Device, Responder, Role, utc_now
from hub.plugin_manager import NotifierRegistry

if TYPE_CHECKING:
    from broker.pki import Pki


class AdminError(ValueError):
    """A registration request that cannot be carried out; the message says why."""


class DeviceIdTaken(AdminError):
    """The id is already a broker username: a device, a responder, the hub or another account.

    Broker usernames are one namespace: registering a device must never replace the password of
    the hub's own account, a responder's or another device's.
    """


@dataclass(frozen=True)
class DeviceCredentials:
    """What a device needs to connect and sign; the password and key are shown only once."""

    device_id: str
    password: str
    broker_reloaded: bool
    key: str = ""  #: the signing key, 64 hex characters (devicekit.signing)


def check_timezone(timezone: str) -> str:
    """``timezone`` if it is an IANA zone name; AdminError otherwise."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise AdminError(
            f"unknown time zone {timezone!r}; use an IANA name like Europe/Stockholm"
        ) from None
    return timezone


def add_defender(
    engine: Engine, name: str, language: str = "en", timezone: str = "UTC"
) -> Defender:
    check_timezone(timezone)
    with Session(engine) as session:
        defender = Defender(name=name, language=language, timezone=timezone)
        session.add(defender)
        session.commit()
        session.refresh(defender)
        return defender


def add_device(
    engine: Engine,
    device_id: str,
    defender_id: int,
    broker_data_dir: Path | None,
    password: str | None = None,
    *,
    encrypt: bool = False,
) -> DeviceCredentials:
    """Register a wristband, create its broker account and its signing key.

    The password and the key are returned once; with ``encrypt`` the hub refuses its payloads
    unless they are encrypted with the key (PROTOCOL.md §5.5).
    """
    try:
        validate_device_id(device_id)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    with Session(engine) as session:
        if session.get(Defender, defender_id) is None:
            raise AdminError(
                f"no defender with id {defender_id}; add one with `natalia defender add`"
            )
        if session.get(Device, device_id) is not None:
            raise DeviceIdTaken(f"device {device_id!r} is already registered")
        taken = select(Responder).where(Responder.mqtt_user == device_id)
        if session.exec(taken).first() is not None:
            raise DeviceIdTaken(
                f"{device_id!r} is a responder's broker username; choose another device id"
            )
        if broker_data_dir is None:
            raise AdminError(
                "the config has no [broker] data_dir: cannot create the device account"
            )
        settings = BrokerSettings(data_dir=broker_data_dir)
        if device_id in PasswordFile(settings.password_file):
            raise DeviceIdTaken(
                f"{device_id!r} is already a broker account; choose another device id"
            )
        password = password or generate_password()
        PasswordFile(settings.password_file).set(device_id, password)
        key = new_key()
        session.add(Device(id=device_id, defender_id=defender_id, key=key, encrypt=encrypt))
        session.commit()
    return DeviceCredentials(device_id, password, signal_running_broker(settings), key)


@dataclass(frozen=True)
class DeviceSuspension:
    """What ``suspend_device`` / ``revoke_device`` did."""

    device_id: str
    account_removed: bool
    certificate_serial: int | None  # the certificate put on the CRL, if the device had one
    broker_reloaded: bool


def suspend_device(
    engine: Engine, device_id: str, broker_data_dir: Path | None
) -> DeviceSuspension:
    """Stop a device at once: inactive in the hub, broker account removed, broker reloaded.

    Its client certificate, if it has one, goes on the CRL "on hold" (reversible). On SIGHUP
    Mosquitto 2 also disconnects a client whose account is gone; should it reconnect by any
    other way, the hub refuses its messages as from a suspended device and keeps them for HQ.
    """
    return _stop_device(engine, device_id, broker_data_dir, "suspended")


def revoke_device(engine: Engine, device_id: str, broker_data_dir: Path | None) -> DeviceSuspension:
    """Suspend the device and revoke its certificate for good (a seized or lost wristband)."""
    return _stop_device(engine, device_id, broker_data_dir, "revoked")


def _stop_device(
    engine: Engine, device_id: str, broker_data_dir: Path | None, reason: str
) -> DeviceSuspension:
    from broker.pki import Pki

    if broker_data_dir is None:
        raise AdminError("the config has no [broker] data_dir: cannot remove the device account")
    settings = BrokerSettings(data_dir=broker_data_dir)
    with Session(engine) as session:
        device = session.get(Device, device_id)
        if device is None:
            raise AdminError(f"no device {device_id!r}")
        device.active = False
        if reason == "revoked":
            device.key = None  # its key may be in an adversary's hands: nothing it signs counts
        session.add(device)
        session.commit()
    removed = PasswordFile(settings.password_file).remove(device_id)
    pki = Pki(settings.pki_dir)
    serial = pki.revoke_device(device_id, reason) if pki.ca_cert.exists() else None
    return DeviceSuspension(device_id, removed, serial, signal_running_broker(settings))


@dataclass(frozen=True)
class DeviceResumption:
    """What ``resume_device`` did; the new password is shown once."""

    device_id: str
    password: str
    certificate_serial: int | None  # the certificate taken off hold, if it was on hold
    broker_reloaded: bool


def resume_device(engine: Engine, device_id: str, broker_data_dir: Path | None) -> DeviceResumption:
    """Undo ``suspend_device``: active again, a NEW broker password, its certificate off hold.

    The signing key and the anti-replay marks stay (the device goes on with its ``seq``). A
    revoked device cannot come back: its key may be in other hands, so it needs a new identity
    (``rekey_device``, ``natalia device provision ID --rekey``).
    """
    from broker.pki import Pki

    settings = _broker_settings(broker_data_dir)
    pki = Pki(settings.pki_dir)
    with Session(engine) as session:
        device = session.get(Device, device_id)
        if device is None:
            raise AdminError(f"no device {device_id!r}")
        if device.active:
            raise AdminError(f"device {device_id!r} is not suspended")
        if device.key is None or _certificate_revoked(pki, device_id):
            raise AdminError(
                f"device {device_id!r} was revoked (or has no signing key) and cannot be "
                f"resumed: give it a new identity with `natalia device provision {device_id} "
                "--rekey` and flash the new bundle"
            )
        device.active = True
        session.add(device)
        session.commit()
    password = generate_password()
    PasswordFile(settings.password_file).set(device_id, password)
    serial = pki.release_hold(device_id) if pki.ca_cert.exists() else None
    return DeviceResumption(device_id, password, serial, signal_running_broker(settings))


def rekey_device(
    engine: Engine, device_id: str, broker_data_dir: Path | None, *, encrypt: bool | None = None
) -> DeviceCredentials:
    """A new identity for a registered device: new password, new signing key, active again.

    Its anti-replay marks are reset (the new key starts a new ``seq`` history) and a client
    certificate it had goes on the CRL (superseded): issue a new one if it needs one. Works
    for a revoked device too: what the old key signs is refused from now on. ``encrypt``
    None keeps the device's setting.
    """
    from broker.pki import Pki

    settings = _broker_settings(broker_data_dir)
    key = new_key()
    with Session(engine) as session:
        device = session.get(Device, device_id)
        if device is None:
            raise AdminError(f"no device {device_id!r}; provision it without --rekey")
        device.key = key
        device.alarm_seq = device.telemetry_seq = None
        device.active = True
        if encrypt is not None:
            device.encrypt = encrypt
        session.add(device)
        session.commit()
    password = generate_password()
    PasswordFile(settings.password_file).set(device_id, password)
    pki = Pki(settings.pki_dir)
    if pki.ca_cert.exists():
        pki.revoke_device(device_id, "superseded")
    return DeviceCredentials(device_id, password, signal_running_broker(settings), key)


def _broker_settings(broker_data_dir: Path | None) -> BrokerSettings:
    if broker_data_dir is None:
        raise AdminError("the config has no [broker] data_dir: cannot change device accounts")
    return BrokerSettings(data_dir=broker_data_dir)


def _certificate_revoked(pki: Pki, device_id: str) -> bool:
    """Whether the device's current certificate is on the CRL as revoked (not only on hold)."""
    serial = pki.device_serial(device_id) if pki.ca_cert.exists() else None
    return any(r.serial == serial and r.reason == "revoked" for r in pki.revocations())


def add_contact(
    engine: Engine,
    registry: NotifierRegistry,
    name: str,
    channel_url: str,
    defender_id: int | None,
    language: str = "en",
    role: Role | None = None,
    fallback_urls: Sequence[str] = (),
    receives_tests: bool | None = None,
) -> Contact:
    """Add a contact of a defender, or an organisation-wide one when ``defender_id`` is None.

    The role defaults to ``trusted`` for a defender's contact and ``hq`` otherwise; HQ contacts
    receive test alarms unless told otherwise, others only when asked.
    """
    role = role or (Role.HQ if defender_id is None else Role.TRUSTED)
    if role is Role.NEARBY:
        raise AdminError("nearby responders are added with `natalia responder add`")
    if role is Role.HQ and defender_id is not None:
        raise AdminError("an HQ contact belongs to the organisation: use --hq, not --defender")
    for url in (channel_url, *fallback_urls):
        registry.validate(url)
    with Session(engine) as session:
        if defender_id is not None and session.get(Defender, defender_id) is None:
            raise AdminError(f"no defender with id {defender_id}")
        contact = Contact(
            name=name,
            channel_url=channel_url,
            defender_id=defender_id,
            language=language,
            role=role.value,
            fallback_urls=list(fallback_urls),
            receives_tests=role is Role.HQ if receives_tests is None else receives_tests,
        )
        session.add(contact)
        session.commit()
        session.refresh(contact)
        return contact


@dataclass(frozen=True)
class ContactChange:
    """What ``set_contact_active`` did."""

    contact: Contact
    cancelled: int  #: messages that were waiting to go to it and never will


def set_contact_active(
    engine: Engine, contact_id: int, active: bool, actor: str, now: datetime | None = None
) -> ContactChange:
    """Activate a contact, or deactivate it: from this commit on it receives nothing at all.

    Deactivating cancels every message still waiting to go to it (pending or waiting for a
    retry), each with the reason on its alarm's timeline; its acknowledgement links stop
    working; no stage, reminder, location update, closing message or fallback channel reaches
    it any more (``hub.recipients``). A send already under way cannot be called back.
    """
    now = now or utc_now()
    with Session(engine) as session:
        contact = session.get(Contact, contact_id)
        if contact is None:
            raise AdminError(f"no contact with id {contact_id}; see `natalia contact list`")
        contact.active = active
        session.add(contact)
        cancelled = 0
        if not active:
            reason = f"the contact was deactivated by {actor}"
            cancelled = stop_deliveries_to(session, reason, now, contact_id=contact_id)
        session.commit()
        session.refresh(contact)
        return ContactChange(contact, cancelled)


def list_devices(engine: Engine) -> list[Device]:
    with Session(engine) as session:
        return list(session.exec(select(Device).order_by(Device.id)))


def list_defenders(engine: Engine) -> list[Defender]:
    with Session(engine) as session:
        return list(session.exec(select(Defender).order_by(Defender.id)))  # type: ignore[arg-type]


def list_contacts(engine: Engine) -> list[Contact]:
    with Session(engine) as session:
        return list(session.exec(select(Contact).order_by(Contact.id)))  # type: ignore[arg-type]


def set_defender_options(
    engine: Engine,
    defender_id: int,
    *,
    cancel_code: str | None = None,
    duress_code: str | None = None,
    allow_public_broadcast: bool | None = None,
    policy_name: str | None = None,
) -> Defender:
    """Codes, consent to public broadcast and the escalation policy of one defender."""
    from sqlmodel import select

    from hub.models import EscalationPolicy

    if cancel_code is not None and cancel_code == duress_code:
        raise AdminError("the cancel code and the duress code must differ")
    with Session(engine) as session:
        defender = session.get(Defender, defender_id)
        if defender is None:
            raise AdminError(f"no defender with id {defender_id}")
        try:
            if cancel_code is not None:
                defender.cancel_code_hash = hash_code(cancel_code)
            if duress_code is not None:
                defender.duress_code_hash = hash_code(duress_code)
        except ValueError as exc:
            raise AdminError(str(exc)) from None
        if allow_public_broadcast is not None:
            defender.allow_public_broadcast = allow_public_broadcast
        if policy_name is not None:
            policy = session.exec(
                select(EscalationPolicy).where(EscalationPolicy.name == policy_name)
            ).first()
            if policy is None:
                raise AdminError(
                    f"no escalation policy {policy_name!r}; add it with "
                    "`natalia policy set NAME FILE`"
                )
            defender.policy_id = policy.id
        session.add(defender)
        session.commit()
        session.refresh(defender)
        return defender


def set_policy(engine: Engine, name: str, path: Path) -> None:
    """Store the policy in ``path`` (TOML or JSON) under ``name``; ``default`` applies to all."""
    from hub.escalation import PolicyError

    try:
        policy = load_policy_file(path)
    except (PolicyError, OSError) as exc:
        raise AdminError(str(exc)) from None
    with Session(engine) as session:
        save_policy(session, name, policy)
        session.commit()
