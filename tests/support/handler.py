"""The hub's message handler on a real database, called without a broker, so that a test
chooses exactly in which order (and how often) a device's messages arrive."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devicekit import protocol
from devicekit.signing import parse_key, sign
from devicekit.topics import topic
from hub import admin
from hub.database import AsyncStore
from hub.ingest import Ingest, Rejection
from hub.store import AlarmOutcome, Store

#: One MQTT message as the hub receives it: topic and payload bytes.
Delivery = tuple[str, bytes]


@dataclass(frozen=True)
class SigningDevice:
    """A registered device and its key: what it sends is signed as a wristband signs it."""

    device_id: str
    key: str

    def message(self, message: protocol.DeviceMessage) -> Delivery:
        name = topic(self.device_id, message.type)
        return name, sign(parse_key(self.key), name, message.to_payload())


def register(store: Store, device_id: str, defender_id: int, broker_dir: Path) -> SigningDevice:
    creds = admin.add_device(store.engine, device_id, defender_id, broker_dir)
    return SigningDevice(device_id, creds.key)


@dataclass
class DirectHandler:
    """``hub.ingest.Ingest`` on its own database thread, as the hub runs it."""

    store: Store
    alarms: list[AlarmOutcome] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = AsyncStore(self.store)
        self.ingest = Ingest(self.db, self._alarm, self._rejected)
        self.loop = asyncio.new_event_loop()  # one loop, as in the hub: its locks stay valid

    async def _alarm(self, outcome: AlarmOutcome) -> None:
        self.alarms.append(outcome)

    async def _rejected(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)

    def one_by_one(self, deliveries: Sequence[Delivery]) -> list[int]:
        """Handle ``deliveries`` in this order, each after the one before; the PUBACK codes."""

        async def run() -> list[int]:
            return [await self.ingest.handle(name, payload) for name, payload in deliveries]

        return self.loop.run_until_complete(run())

    def all_at_once(self, deliveries: Sequence[Delivery]) -> list[int]:
        """Handle ``deliveries`` concurrently, as the hub handles what the broker has in flight."""

        async def run() -> list[int]:
            return list(await asyncio.gather(*(self.ingest.handle(n, p) for n, p in deliveries)))

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.close()
        self.db.close()
