"""The hub service: wires the store, the plugins, the dispatcher and the MQTT connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from devicekit.protocol import AckStage
from hub.config import HubConfig
from hub.database import AsyncStore
from hub.dispatch import Dispatcher
from hub.ingest import Ingest, Rejection
from hub.logs import pin_library_loggers
from hub.mqtt import HubConnection
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.store import AlarmOutcome

log = logging.getLogger(__name__)


class Hub:
    def __init__(
        self,
        config: HubConfig,
        registry: NotifierRegistry | None = None,
        ready_file: Path | None = None,
    ) -> None:
        pin_library_loggers()
        self.config = config
        self.ready_file = ready_file
        if registry is None:
            pm = get_plugin_manager(load_entry_points=config.load_entry_points)
            registry = NotifierRegistry.from_plugins(pm, config.plugins)
        self.registry = registry
        self.db = AsyncStore.open(config.database.url)
        self.ingest = Ingest(self.db, self._alarm_stored, self._rejected, self._storage_failed)
        self.dispatcher = Dispatcher(
            self.db, registry, config.delivery.timeout_s, self._alarm_notified
        )
        self.connection = HubConnection(config.broker, self.ingest.handle)
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when installed by the CLI)."""
        dispatcher = asyncio.create_task(self.dispatcher.run(), name="dispatcher")
        try:
            await self.connection.connect()
            if self.ready_file is not None:
                self.ready_file.write_text(f"{os.getpid()}\n")
            log.info(
                "hub running; notifiers: %s",
                ", ".join(sorted(n.name for n in self.registry.notifiers)),
            )
            await self._stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.connection.disconnect()
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
            await self.dispatcher.drain()
            self.db.close()
            if self.ready_file is not None:
                self.ready_file.unlink(missing_ok=True)
            log.info("hub stopped")

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def _alarm_stored(self, outcome: AlarmOutcome) -> None:
        stage = AckStage.NOTIFIED if outcome.state == "notified" else AckStage.RECEIVED
        self.connection.publish_ack(outcome.device_id, outcome.alarm_id, stage)
        if outcome.created:
            await self.db.run(self.db.store.record_event, outcome.alarm_pk, "ack_sent", stage.value)
            self.dispatcher.kick()

    def _storage_failed(self) -> None:
        self.connection.request_redelivery()

    async def _rejected(self, rejection: Rejection) -> None:
        self.dispatcher.kick()

    async def _alarm_notified(self, alarm_pk: int) -> None:
        alarm = await self.db.run(self.db.store.get_alarm, alarm_pk)
        if alarm is None:
            return
        self.connection.publish_ack(alarm.device_id, alarm.alarm_id, AckStage.NOTIFIED)
        await self.db.run(self.db.store.record_event, alarm_pk, "ack_sent", AckStage.NOTIFIED.value)
