"""Register a defender, a device and contacts the way an operator would (through hub.admin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from hub import admin
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from tests.support.brokers import RunningBroker
from tests.support.device import RawDevice


@dataclass
class Population:
    defender_id: int
    device_id: str
    device_password: str
    device_key: str
    contact_ids: dict[str, int] = field(default_factory=dict)

    def raw_device(self, broker: RunningBroker) -> RawDevice:
        """A bare MQTT client logged in as this device, signing with its key (not yet closed)."""
        return RawDevice(
            broker.host, broker.port, self.device_id, self.device_password, self.device_key
        )


def populate(
    engine: Engine,
    registry: NotifierRegistry,
    broker_data_dir: Path,
    contacts: dict[str, str],
    hq: dict[str, str] | None = None,
    device_id: str = "wb-1",
    defender_name: str = "Natalia Test",
) -> Population:
    """``contacts``/``hq`` map a contact name to its channel URL."""
    defender = admin.add_defender(engine, defender_name, timezone="Europe/Stockholm")
    assert defender.id is not None
    creds = admin.add_device(engine, device_id, defender.id, broker_data_dir)
    population = Population(defender.id, device_id, creds.password, creds.key)
    for name, url in (hq or {}).items():
        contact = admin.add_contact(engine, registry, name, url, None)
        assert contact.id is not None
        population.contact_ids[name] = contact.id
    for name, url in contacts.items():
        contact = admin.add_contact(engine, registry, name, url, defender.id)
        assert contact.id is not None
        population.contact_ids[name] = contact.id
    return population


def populate_on_broker(
    engine: Engine,
    broker: RunningBroker,
    contacts: dict[str, str],
    device_id: str = "wb-1",
) -> Population:
    """Register a defender, one device and ``contacts`` (built-in notifiers), and create the
    device's account on the running test broker."""
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    population = populate(
        engine, registry, broker.process.settings.data_dir, contacts, device_id=device_id
    )
    broker.add_account(population.device_id, population.device_password)
    return population
