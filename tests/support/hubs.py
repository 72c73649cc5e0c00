"""Run a real Hub (gmqtt, SQLModel, dispatcher) on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from hub.clock import Clock
from hub.config import (
    BrokerConfig,
    DatabaseConfig,
    DeliveryConfig,
    HubConfig,
    SecurityConfig,
    TimersConfig,
)
from hub.db import make_engine
from hub.plugin_manager import NotifierRegistry
from hub.service import Hub
from hub.store import Store
from tests.support.brokers import RunningBroker
from tests.support.receivers import wait_until


def hub_config(
    broker: RunningBroker,
    database_url: str,
    timeout_s: float = 5.0,
    plugins: dict[str, dict[str, Any]] | None = None,
) -> HubConfig:
    return HubConfig(
        database=DatabaseConfig(url=database_url),
        broker=BrokerConfig(
            host=broker.host,
            port=broker.port,
            password=SecretStr(broker.hub_password),
            data_dir=broker.process.settings.data_dir,
            session_expiry_s=3600,
        ),
        delivery=DeliveryConfig(timeout_s=timeout_s),
        # The tests' SMTP and HTTP receivers are on loopback: allowed explicitly (hub/egress.py).
        security=SecurityConfig(allowed_networks=["127.0.0.0/8"]),
        timers=TimersConfig(tick_s=0.05),
        plugins=plugins or {},
        load_entry_points=False,
    )


class RunningHub:
    """``start()`` returns once the hub is connected and subscribed; ``stop()`` shuts it down."""

    def __init__(
        self,
        config: HubConfig,
        registry: NotifierRegistry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.clock = clock
        self.hub: Hub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> RunningHub:
        ready = threading.Event()

        def main() -> None:
            async def run() -> None:
                self._loop = asyncio.get_running_loop()
                self.hub = Hub(self.config, registry=self.registry, clock=self.clock)
                ready.set()
                await self.hub.run()

            try:  # asyncio.run, as in production: left-over tasks are cancelled at the end
                asyncio.run(run())
            except BaseException as exc:  # surfaced by stop()
                self._error = exc
                ready.set()

        self._thread = threading.Thread(target=main, name="test-hub", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        wait_until(
            lambda: self._error or (self.hub and self.hub.connection.connected.is_set()), timeout
        )
        if self._error:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        alive = self._thread is not None and self._thread.is_alive()
        if self.hub is not None and self._loop is not None and self._thread and alive:
            self._loop.call_soon_threadsafe(self.hub.stop)
            self._thread.join(timeout)
        if self._error:
            raise self._error

    def next_rounds(self, rounds: int = 2, timeout: float = 10.0) -> None:
        """Wait until the timer loop completed ``rounds`` more rounds (after a clock change)."""
        assert self.hub is not None and self._loop is not None
        target = self.hub.rounds + rounds
        self._loop.call_soon_threadsafe(self.hub.wake)
        wait_until(lambda: self.hub is not None and self.hub.rounds >= target, timeout)

    def __enter__(self) -> RunningHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'natalia.db'}"


def open_store(url: str) -> Store:
    return Store(make_engine(url))
