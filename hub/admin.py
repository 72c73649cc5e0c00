"""Registration of defenders, devices and contacts (used by the CLI, the demo and the tests).

Registering a device also creates its broker account, so devices are never added by editing
Mosquitto's files by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from broker.accounts import PasswordFile, generate_password
from broker.config import BrokerSettings
from broker.launcher import signal_running_broker
from devicekit.topics import validate_device_id
from hub.models import Contact, Defender, Device
from hub.plugin_manager import NotifierRegistry


class AdminError(ValueError):
    """A registration request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class DeviceCredentials:
    device_id: str
    password: str
    broker_reloaded: bool


def add_defender(
    engine: Engine, name: str, language: str = "en", timezone: str = "UTC"
) -> Defender:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise AdminError(
            f"unknown time zone {timezone!r}; use an IANA name like Europe/Stockholm"
        ) from None
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
) -> DeviceCredentials:
    """Register a wristband and create its broker account; the password is returned once."""
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
            raise AdminError(f"device {device_id!r} is already registered")
        if broker_data_dir is None:
            raise AdminError(
                "the config has no [broker] data_dir: cannot create the device account"
            )
        password = password or generate_password()
        settings = BrokerSettings(data_dir=broker_data_dir)
        PasswordFile(settings.password_file).set(device_id, password)
        session.add(Device(id=device_id, defender_id=defender_id))
        session.commit()
    return DeviceCredentials(device_id, password, signal_running_broker(settings))


def add_contact(
    engine: Engine,
    registry: NotifierRegistry,
    name: str,
    channel_url: str,
    defender_id: int | None,
    language: str = "en",
) -> Contact:
    """Add a contact of a defender, or an HQ contact when ``defender_id`` is None."""
    registry.validate(channel_url)
    with Session(engine) as session:
        if defender_id is not None and session.get(Defender, defender_id) is None:
            raise AdminError(f"no defender with id {defender_id}")
        contact = Contact(
            name=name, channel_url=channel_url, defender_id=defender_id, language=language
        )
        session.add(contact)
        session.commit()
        session.refresh(contact)
        return contact


def list_devices(engine: Engine) -> list[Device]:
    with Session(engine) as session:
        return list(session.exec(select(Device).order_by(Device.id)))


def list_defenders(engine: Engine) -> list[Defender]:
    with Session(engine) as session:
        return list(session.exec(select(Defender).order_by(Defender.id)))  # type: ignore[arg-type]


def list_contacts(engine: Engine) -> list[Contact]:
    with Session(engine) as session:
        return list(session.exec(select(Contact).order_by(Contact.id)))  # type: ignore[arg-type]
