"""``/v1/responders``: people who can come when an alarm is near them.

Their positions are dangerous data: the API shows only when the last one arrived, never where.
Channel URLs are shown masked. A responder with an OwnTracks username gets a broker account;
its password is in the creating response only.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlmodel import select

from hub.api.errors import Conflict
from hub.api.pagination import Cursor, Limit, paginate
from hub.api.routes._common import (
    ContactsReader,
    Context,
    DbSession,
    OperationsWriter,
    PathId,
    check_destinations,
    domain_errors,
    get_or_404,
)
from hub.api.views import masked
from hub.models import Responder as ResponderRow
from hub.plugin_api import mask_url
from hub.responders import UsernameTaken, register_responder
from sdk.models import Page, Responder, ResponderCreated, ResponderIn, ResponderUpdate

router = APIRouter(prefix="/responders", tags=["responders"])


def as_responder(row: ResponderRow) -> Responder:
    assert row.id is not None
    return Responder(
        id=row.id,
        name=row.name,
        language=row.language,
        channel=mask_url(row.channel_url),
        fallbacks=masked(row.fallback_urls),
        available=row.available,
        radius_m=row.radius_m,
        receives_tests=row.receives_tests,
        mqtt_user=row.mqtt_user,
        position_at=row.position_at,
    )


@router.get("", response_model=Page[Responder], summary="Responders, lowest id first")
def list_responders(
    session: DbSession, _: ContactsReader, limit: Limit = 50, cursor: Cursor = None
) -> Page[Responder]:
    return paginate(
        session, select(ResponderRow), ResponderRow.id, as_responder, limit=limit, cursor=cursor
    )


@router.post(
    "",
    response_model=ResponderCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Register a responder; with mqtt_user also their broker account (password shown once)",
    responses={409: {"description": "The username is already a broker account"}},
)
def create_responder(body: ResponderIn, ctx: Context, _: OperationsWriter) -> ResponderCreated:
    check_destinations(ctx, body.channel_url, *body.fallback_urls)
    with domain_errors():
        try:
            added = register_responder(
                ctx.engine,
                ctx.registry,
                ctx.broker_data_dir,
                body.name,
                body.channel_url,
                body.radius_m,
                mqtt_user=body.mqtt_user,
                language=body.language,
                fallback_urls=body.fallback_urls,
                receives_tests=body.receives_tests,
            )
        except UsernameTaken as exc:
            raise Conflict(str(exc)) from None
    view = as_responder(added.responder)
    return ResponderCreated(**view.model_dump(), mqtt_password=added.password)


@router.get("/{responder_id}", response_model=Responder)
def get_responder(responder_id: PathId, session: DbSession, _: ContactsReader) -> Responder:
    return as_responder(get_or_404(session, ResponderRow, responder_id, "responder"))


@router.patch("/{responder_id}", response_model=Responder)
def update_responder(
    responder_id: PathId, body: ResponderUpdate, session: DbSession, _: OperationsWriter
) -> Responder:
    row = get_or_404(session, ResponderRow, responder_id, "responder")
    for field, value in body.model_dump(exclude_none=True).items():
        setattr(row, field, value)
    session.add(row)
    session.commit()
    session.refresh(row)
    return as_responder(row)
