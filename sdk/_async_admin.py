"""Administration: API tokens and webhooks (both need an admin token)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from datetime import datetime

from sdk._async_transport import AsyncResource
from sdk._base import given, path, payload, query
from sdk.models import (
    ApiRole,
    Page,
    Token,
    TokenCreated,
    TokenIn,
    Webhook,
    WebhookCreated,
    WebhookDelivery,
    WebhookIn,
)


class AsyncTokens(AsyncResource):
    """``client.tokens``: API tokens; the hub keeps only their hashes."""

    async def create(
        self, *, name: str, role: ApiRole | str, expires_at: datetime | None = None
    ) -> TokenCreated:
        """A new token: its secret (``.token``) is in this answer only; store it now."""
        sent = payload(TokenIn(name=name, role=role, **given(expires_at=expires_at)))
        return await self._api.fetch("POST", "/tokens", TokenCreated, json=sent)

    async def revoke(self, token_id: int) -> Token:
        """Revoke a token: it stops working at once."""
        return await self._api.fetch("DELETE", path("tokens", token_id), Token)

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Token]:
        return await self._api.fetch_page("/tokens", Token, query(limit=limit, cursor=cursor))

    def iter(self, *, page_size: int | None = None) -> AsyncIterator[Token]:
        return self._api.paginate("/tokens", Token, query(limit=page_size))


class AsyncWebhooks(AsyncResource):
    """``client.webhooks``: signed POSTs to your URL when alarms or fund requests change.

    Check each delivery's signature with :func:`sdk.webhooks.verify_signature`.
    """

    async def create(
        self,
        *,
        url: str,
        events: builtins.list[str] | None = None,
        description: str | None = None,
    ) -> WebhookCreated:
        """Subscribe ``url`` to ``events`` (default ``["*"]``); the signing secret is in this
        answer only."""
        sent = payload(WebhookIn(url=url, **given(events=events, description=description)))
        return await self._api.fetch("POST", "/webhooks", WebhookCreated, json=sent)

    async def get(self, webhook_id: int) -> Webhook:
        return await self._api.fetch("GET", path("webhooks", webhook_id), Webhook)

    async def delete(self, webhook_id: int) -> None:
        """Deactivate the webhook; deliveries still waiting are cancelled."""
        await self._api.no_content("DELETE", path("webhooks", webhook_id))

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Webhook]:
        params = query(limit=limit, cursor=cursor)
        return await self._api.fetch_page("/webhooks", Webhook, params)

    def iter(self, *, page_size: int | None = None) -> AsyncIterator[Webhook]:
        return self._api.paginate("/webhooks", Webhook, query(limit=page_size))

    async def deliveries(
        self,
        webhook_id: int,
        *,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[WebhookDelivery]:
        """What was sent to the webhook, newest first, with the answers it got."""
        url = path("webhooks", webhook_id, "deliveries")
        params = query(status=status, limit=limit, cursor=cursor)
        return await self._api.fetch_page(url, WebhookDelivery, params)

    def iter_deliveries(
        self, webhook_id: int, *, status: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[WebhookDelivery]:
        url = path("webhooks", webhook_id, "deliveries")
        return self._api.paginate(url, WebhookDelivery, query(status=status, limit=page_size))
