"""``/v1/webhooks``: signed POSTs of alarm (and other) events to partner systems (admin).

The secret that signs a webhook's requests is in the creation response only. URLs are shown
masked (they may hold credentials). Deleting a webhook deactivates it: its deliveries that were
waiting are cancelled, and its history stays listed. How requests are signed and retried:
hub/api/README.md ("Webhooks: signing and retries").
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlmodel import col, select

from hub.api.errors import Invalid
from hub.api.pagination import Cursor, Limit, paginate
from hub.api.routes._common import (
    Admin,
    Context,
    DbSession,
    PathId,
    check_destinations,
    get_or_404,
)
from hub.plugin_api import mask_url
from hub.webhooks import subscriptions
from hub.webhooks.tables import WebhookDelivery as DeliveryRow
from hub.webhooks.tables import WebhookDeliveryStatus
from hub.webhooks.tables import WebhookSubscription as WebhookRow
from sdk.models import Page, Webhook, WebhookCreated, WebhookDelivery, WebhookIn

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def as_webhook(row: WebhookRow) -> Webhook:
    return Webhook(
        id=row.id or 0,
        url=mask_url(row.url),
        events=list(row.events),
        description=row.description,
        active=row.active,
        created_at=row.created_at,
    )


def as_delivery(row: DeliveryRow) -> WebhookDelivery:
    return WebhookDelivery.model_validate(row)


@router.get("", response_model=Page[Webhook], summary="Webhooks, lowest id first")
def list_webhooks(
    session: DbSession, _: Admin, limit: Limit = 50, cursor: Cursor = None
) -> Page[Webhook]:
    return paginate(
        session, select(WebhookRow), WebhookRow.id, as_webhook, limit=limit, cursor=cursor
    )


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe a URL to events; the signing secret is in this response only",
)
def create_webhook(
    body: WebhookIn, session: DbSession, principal: Admin, context: Context
) -> WebhookCreated:
    """The webhook receives the events from now on (not earlier ones)."""
    check_destinations(context, body.url, resolve=True)
    try:
        row, secret = subscriptions.create(
            session, body.url, body.events, body.description, principal.actor, principal.token_id
        )
    except subscriptions.WebhookError as exc:
        raise Invalid(str(exc)) from None
    return WebhookCreated(**as_webhook(row).model_dump(), secret=secret)


@router.get("/{webhook_id}", response_model=Webhook)
def get_webhook(webhook_id: PathId, session: DbSession, _: Admin) -> Webhook:
    return as_webhook(get_or_404(session, WebhookRow, webhook_id, "webhook"))


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Deactivate a webhook; its waiting deliveries are cancelled",
)
def delete_webhook(
    webhook_id: PathId, session: DbSession, principal: Admin, context: Context
) -> Response:
    row = get_or_404(session, WebhookRow, webhook_id, "webhook")
    subscriptions.deactivate(session, row, f"deleted by {principal.actor}", context.clock.now())
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=Page[WebhookDelivery],
    summary="A webhook's deliveries, newest first",
)
def list_deliveries(
    webhook_id: PathId,
    session: DbSession,
    _: Admin,
    status_: Annotated[
        WebhookDeliveryStatus | None,
        Query(alias="status", description="Only deliveries in this state."),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[WebhookDelivery]:
    get_or_404(session, WebhookRow, webhook_id, "webhook")
    query = select(DeliveryRow).where(col(DeliveryRow.webhook_id) == webhook_id)
    if status_ is not None:
        query = query.where(col(DeliveryRow.status) == status_.value)
    return paginate(
        session, query, DeliveryRow.id, as_delivery, limit=limit, cursor=cursor, newest_first=True
    )
