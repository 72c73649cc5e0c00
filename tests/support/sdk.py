"""Run the same SDK call through ``Client`` and ``AsyncClient``, so one test covers both.

``both(lambda c: c.defenders.create(name="Ana"))`` calls a ``Client`` in sync mode; in async
mode it calls an ``AsyncClient`` on an event loop in another thread (an anyio blocking portal),
awaits the result and collects an async iterator into a list. Clients are made once per token
and closed by ``close()`` (the fixture's teardown).

``wristband`` and ``raise_alarm`` make real alarms: a device registered through the SDK
publishes over MQTT to the hub's broker, as a wristband does.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

from anyio.from_thread import BlockingPortal, start_blocking_portal

from devicekit.protocol import AlarmKind
from sdk import AsyncClient, Client
from sdk.models import Alarm, ApiRole
from tests.support.api import ApiHub
from tests.support.brokers import try_connect
from tests.support.device import RawDevice, make_alarm
from tests.support.receivers import wait_until

Mode = Literal["sync", "async"]
MODES: tuple[Mode, ...] = ("sync", "async")


_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


class Both:
    def __init__(self, api: ApiHub, mode: Mode) -> None:
        self.api = api
        self.mode = mode
        self._stack = contextlib.ExitStack()
        self._clients: dict[str, Any] = {}
        self._portal: BlockingPortal | None = None

    def __call__(
        self, call: Callable[[Any], Any], role: ApiRole = ApiRole.ADMIN, *, token: str | None = None
    ) -> Any:
        client = self._client(token or self.api.tokens[role])
        if self.mode == "sync":
            result = call(client)
            return list(result) if isinstance(result, Iterator) else result
        return self._loop().call(self._run, call, client)

    @staticmethod
    async def _run(call: Callable[[Any], Any], client: AsyncClient) -> Any:
        result = call(client)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, AsyncIterator):
            result = [item async for item in result]
        return result

    def _loop(self) -> BlockingPortal:
        if self._portal is None:
            self._portal = self._stack.enter_context(start_blocking_portal())
        return self._portal

    def _client(self, token: str) -> Any:
        if token not in self._clients:
            if self.mode == "sync":
                self._clients[token] = self._stack.enter_context(Client(self.api.base_url, token))
            else:
                client = AsyncClient(self.api.base_url, token)
                portal = self._loop()
                self._stack.callback(portal.call, client.aclose)
                self._clients[token] = client
        return self._clients[token]

    def close(self) -> None:
        self._stack.close()


def wristband(sdk: Both, made: list[RawDevice], defender_id: int | None = None) -> RawDevice:
    """A wristband registered through the SDK, connected to the hub's broker."""
    if defender_id is None:
        defender_id = sdk(lambda c: c.defenders.create(name=unique("Wearer"))).id
    device_id = unique("wb")
    credentials = sdk(lambda c: c.devices.create(device_id=device_id, defender_id=defender_id))
    broker = sdk.api.broker
    wait_until(lambda: try_connect(broker.host, broker.port, device_id, credentials.password) == 0)
    made.append(
        RawDevice(broker.host, broker.port, device_id, credentials.password, credentials.key)
    )
    return made[-1]


def raise_alarm(sdk: Both, device: RawDevice, kind: AlarmKind = AlarmKind.PANIC) -> Alarm:
    device_alarm_id = unique("alarm")
    payload = make_alarm(device_alarm_id, kind=kind).to_payload()
    assert device.publish("alarm", payload) == "Success"

    def stored() -> Alarm | None:
        alarms = sdk(lambda c: c.alarms.list(device_id=device.device_id)).items
        return next((a for a in alarms if a.device_alarm_id == device_alarm_id), None)

    found: Alarm = wait_until(stored)
    return found
