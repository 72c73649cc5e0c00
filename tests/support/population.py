"""Register a defender, a device and contacts the way an operator would (through hub.admin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from hub import admin
from hub.plugin_manager import NotifierRegistry


@dataclass
class Population:
    defender_id: int
    device_id: str
    device_password: str
    contact_ids: dict[str, int] = field(default_factory=dict)


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
    population = Population(defender.id, device_id, creds.password)
    for name, url in (hq or {}).items():
        contact = admin.add_contact(engine, registry, name, url, None)
        assert contact.id is not None
        population.contact_ids[name] = contact.id
    for name, url in contacts.items():
        contact = admin.add_contact(engine, registry, name, url, defender.id)
        assert contact.id is not None
        population.contact_ids[name] = contact.id
    return population
