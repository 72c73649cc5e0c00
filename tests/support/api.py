"""A real hub serving its HTTP API on a free port, with a token per role, for API and SDK tests.

``start_api_hub`` starts a Mosquitto with the shipped config and a full ``Hub`` (MQTT, dispatcher,
timers, web server) on it: the API under test is the one operators run.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker import free_port
from hub.api.tokens import create_token
from hub.config import HttpConfig, WebhooksConfig
from hub.db import make_engine
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from sdk.models import ApiRole
from tests.support.brokers import RunningBroker, start_broker
from tests.support.hubs import RunningHub, hub_config


@dataclass
class ApiHub:
    broker: RunningBroker
    running: RunningHub
    base_url: str
    database_url: str
    tokens: dict[ApiRole, str] = field(default_factory=dict)

    def client(self, role: ApiRole | None = ApiRole.ADMIN, **kwargs: Any) -> httpx.Client:
        """An httpx client for the API; ``role=None`` sends no token."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10, **kwargs)

    @property
    def data_dir(self) -> Path:
        return self.broker.process.settings.data_dir


def start_api_hub(
    directory: Path,
    database_url: str | None = None,
    registry: NotifierRegistry | None = None,
    plugins: dict[str, dict[str, Any]] | None = None,
) -> ApiHub:
    """A new broker in ``directory`` and a hub with its API on it."""
    broker = start_broker(directory / "broker")
    try:
        return start_hub_with_api(
            broker,
            database_url or f"sqlite:///{directory / 'natalia.db'}",
            registry=registry,
            plugins=plugins,
        )
    except BaseException:
        broker.process.stop()
        raise


def start_hub_with_api(
    broker: RunningBroker,
    database_url: str,
    registry: NotifierRegistry | None = None,
    plugins: dict[str, dict[str, Any]] | None = None,
    webhooks: WebhooksConfig | None = None,
) -> ApiHub:
    """A hub with its API on ``broker`` (e.g. a second hub, or one restarted on the same data)."""
    port = free_port()
    config = hub_config(broker, database_url, plugins=plugins)
    config.http = HttpConfig(enabled=True, port=port, public_url=f"http://127.0.0.1:{port}")
    if webhooks is not None:
        config.webhooks = webhooks
    if registry is None:
        registry = NotifierRegistry.from_plugins(
            get_plugin_manager(load_entry_points=False), config.plugins
        )
    running = RunningHub(config, registry=registry).start()
    base_url = f"http://127.0.0.1:{port}"
    _wait_for_http(base_url)
    engine = make_engine(database_url)
    tokens = {role: create_token(engine, f"test-{role.value}", role)[1] for role in ApiRole}
    engine.dispose()
    return ApiHub(broker, running, base_url, database_url, tokens)


def _wait_for_http(base_url: str) -> None:
    from tests.support.receivers import wait_until

    def up() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code in (200, 503)
        return False

    wait_until(up, 10)


@contextlib.contextmanager
def api_hub(directory: Path, **kwargs: Any) -> Iterator[ApiHub]:
    hub = start_api_hub(directory, **kwargs)
    try:
        yield hub
    finally:
        try:
            hub.running.stop()
        finally:
            hub.broker.process.stop()


_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test in this process uses (tests share one hub per module)."""
    return f"{prefix}-{next(_names)}"


def new_defender(client: httpx.Client) -> int:
    response = client.post("/v1/defenders", json={"name": unique("Defender")})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def walk(client: httpx.Client, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, params=query)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items
