# The sync Client (sdk/_client.py and the other sync modules) is generated from the
# sdk/_async_*.py modules: edit these, then run scripts/generate_sync_sdk.py.
"""The client: the hub's HTTP API, one method per endpoint, grouped by resource."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx

from sdk._async_admin import AsyncTokens, AsyncWebhooks
from sdk._async_alarms import AsyncAlarmEvents, AsyncAlarms, AsyncDeliveries, AsyncRejectedMessages
from sdk._async_directory import (
    AsyncContacts,
    AsyncDefenders,
    AsyncDevices,
    AsyncPolicies,
    AsyncResponders,
)
from sdk._async_events import AsyncEvents
from sdk._async_fund import AsyncFundRequests
from sdk._async_stream import AsyncAlarmEventStream
from sdk._async_transport import AsyncTransport
from sdk._base import DEFAULT_TIMEOUT, Retries, Settings, from_environment
from sdk._sse import DEFAULT_STREAM_READ_TIMEOUT
from sdk.models import Me


class AsyncClient:
    """A client for one hub, authenticated with one API token.

    ``timeout`` (seconds, or an ``httpx.Timeout``) bounds every request; ``retries`` (off by
    default) retries idempotent requests after transport errors, 429 and 502-504, see
    :class:`sdk.Retries`. Pass ``http_client`` to reuse your own ``httpx`` client (proxies,
    certificates); you then close it yourself.

    Use it as a context manager, or call ``aclose()`` when done::

        async with AsyncClient("https://hub.example.org", token) as client:
            me = await client.me()
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        retries: int | Retries = 0,
        http_client: httpx.AsyncClient | None = None,
        user_agent: str | None = None,
    ) -> None:
        settings = Settings.build(
            base_url, token, timeout=timeout, retries=retries, user_agent=user_agent
        )
        self._transport = AsyncTransport(settings, http_client)
        api = self._transport
        self.tokens = AsyncTokens(api)
        self.defenders = AsyncDefenders(api)
        self.devices = AsyncDevices(api)
        self.contacts = AsyncContacts(api)
        self.responders = AsyncResponders(api)
        self.policies = AsyncPolicies(api)
        self.alarms = AsyncAlarms(api)
        self.alarm_events = AsyncAlarmEvents(api)
        self.deliveries = AsyncDeliveries(api)
        self.rejected_messages = AsyncRejectedMessages(api)
        self.webhooks = AsyncWebhooks(api)
        self.fund_requests = AsyncFundRequests(api)
        self.events = AsyncEvents(api)

    @classmethod
    def from_env(
        cls,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        retries: int | Retries = 0,
        http_client: httpx.AsyncClient | None = None,
        user_agent: str | None = None,
    ) -> Self:
        """A client for the hub at ``NATALIA_URL`` with the token in ``NATALIA_TOKEN``."""
        base_url, token = from_environment()
        return cls(
            base_url,
            token,
            timeout=timeout,
            retries=retries,
            http_client=http_client,
            user_agent=user_agent,
        )

    @property
    def base_url(self) -> str:
        """The API's root, e.g. ``https://hub.example.org/v1``."""
        return self._transport.settings.api_url

    @property
    def is_closed(self) -> bool:
        return self._transport.is_closed

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    async def aclose(self) -> None:
        """Close the connections (not those of an ``http_client`` you passed in)."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def me(self) -> Me:
        """The calling token: its name, role and permissions."""
        return await self._transport.fetch("GET", "/me", Me)

    def stream_alarm_events(
        self,
        *,
        after: int | None = None,
        alarm_id: int | str | None = None,
        max_reconnects: int | None = None,
        read_timeout: float = DEFAULT_STREAM_READ_TIMEOUT,
    ) -> AsyncAlarmEventStream:
        """Alarm events as they happen (of one alarm with ``alarm_id``), after event ``after``.

        Reconnects by itself after a dropped connection, resuming after the last event it
        yielded; ``max_reconnects`` bounds the failed tries in a row (default: keep trying).
        ``read_timeout`` is how long a silent connection counts as alive (the hub sends a
        keepalive every 15 s). Connects on the first iteration::

            async with client.stream_alarm_events() as events:
                async for event in events:
                    print(event.alarm_ref, event.kind)
        """
        return AsyncAlarmEventStream(
            self._transport,
            after=after,
            alarm_id=alarm_id,
            max_reconnects=max_reconnects,
            read_timeout=read_timeout,
        )
