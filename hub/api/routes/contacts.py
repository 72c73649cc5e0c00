"""``/v1/contacts``: who is told of an alarm (a defender's contacts, HQ, partners, press...).

Channel URLs carry credentials (bot tokens, SMTP passwords): they are accepted here but only
ever shown masked. To change a channel, add a new contact and deactivate the old one.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlmodel import select

from hub.admin import add_contact, set_contact_active
from hub.api.pagination import Cursor, Limit, paginate
from hub.api.routes._common import (
    ContactsReader,
    Context,
    DbSession,
    OperationsWriter,
    PathId,
    QueryId,
    check_destinations,
    domain_errors,
    get_or_404,
)
from hub.api.views import masked
from hub.models import Contact as ContactRow
from hub.models import Role
from hub.plugin_api import mask_url
from sdk.models import Contact, ContactIn, ContactUpdate, Page, RecipientRole

router = APIRouter(prefix="/contacts", tags=["contacts"])


def as_contact(row: ContactRow) -> Contact:
    assert row.id is not None
    return Contact(
        id=row.id,
        name=row.name,
        defender_id=row.defender_id,
        role=row.role,
        language=row.language,
        channel=mask_url(row.channel_url),
        fallbacks=masked(row.fallback_urls),
        receives_tests=row.receives_tests,
        active=row.active,
    )


@router.get("", response_model=Page[Contact], summary="Contacts, lowest id first")
def list_contacts(
    session: DbSession,
    _: ContactsReader,
    defender_id: QueryId = None,
    role: RecipientRole | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Contact]:
    query = select(ContactRow)
    if defender_id is not None:
        query = query.where(ContactRow.defender_id == defender_id)
    if role is not None:
        query = query.where(ContactRow.role == role.value)
    return paginate(session, query, ContactRow.id, as_contact, limit=limit, cursor=cursor)


@router.post(
    "",
    response_model=Contact,
    status_code=status.HTTP_201_CREATED,
    summary="Add a contact; its channel URLs are checked against the installed notifiers",
)
def create_contact(body: ContactIn, ctx: Context, _: OperationsWriter) -> Contact:
    check_destinations(ctx, body.channel_url, *body.fallback_urls)
    with domain_errors():
        row = add_contact(
            ctx.engine,
            ctx.registry,
            body.name,
            body.channel_url,
            body.defender_id,
            language=body.language,
            role=Role(body.role.value) if body.role is not None else None,
            fallback_urls=body.fallback_urls,
            receives_tests=body.receives_tests,
        )
    return as_contact(row)


@router.get("/{contact_id}", response_model=Contact)
def get_contact(contact_id: PathId, session: DbSession, _: ContactsReader) -> Contact:
    return as_contact(get_or_404(session, ContactRow, contact_id, "contact"))


@router.patch("/{contact_id}", response_model=Contact)
def update_contact(
    contact_id: PathId,
    body: ContactUpdate,
    session: DbSession,
    ctx: Context,
    principal: OperationsWriter,
) -> Contact:
    """``active: false`` stops everything to the contact at once, queued messages included."""
    row = get_or_404(session, ContactRow, contact_id, "contact")
    changes = body.model_dump(exclude_none=True)
    active = changes.pop("active", None)
    for field, value in changes.items():
        setattr(row, field, value)
    session.add(row)
    session.commit()
    if active is not None:
        set_contact_active(ctx.engine, contact_id, active, principal.actor, ctx.clock.now())
    session.refresh(row)
    return as_contact(row)
