"""``/v1/defenders``: the people who wear wristbands."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlmodel import Session, select

from hub.admin import add_defender, check_timezone, set_defender_options
from hub.api.pagination import Cursor, Limit, paginate
from hub.api.routes._common import (
    Context,
    DbSession,
    OperationsReader,
    OperationsWriter,
    PathId,
    domain_errors,
    get_or_404,
)
from hub.models import Defender as DefenderRow
from hub.models import EscalationPolicy
from sdk.models import Defender, DefenderCodes, DefenderIn, DefenderUpdate, Page

router = APIRouter(prefix="/defenders", tags=["defenders"])


def as_defender(session: Session, row: DefenderRow) -> Defender:
    policy = session.get(EscalationPolicy, row.policy_id) if row.policy_id is not None else None
    return Defender(
        id=row.id or 0,
        name=row.name,
        language=row.language,
        timezone=row.timezone,
        allow_public_broadcast=row.allow_public_broadcast,
        policy=policy.name if policy is not None else None,
        codes_set=row.cancel_code_hash is not None,
        created_at=row.created_at,
    )


@router.get("", response_model=Page[Defender], summary="Defenders, lowest id first")
def list_defenders(
    session: DbSession, _: OperationsReader, limit: Limit = 50, cursor: Cursor = None
) -> Page[Defender]:
    return paginate(
        session,
        select(DefenderRow),
        DefenderRow.id,
        lambda row: as_defender(session, row),
        limit=limit,
        cursor=cursor,
    )


@router.post("", response_model=Defender, status_code=status.HTTP_201_CREATED)
def create_defender(
    body: DefenderIn, ctx: Context, session: DbSession, _: OperationsWriter
) -> Defender:
    with domain_errors():
        row = add_defender(ctx.engine, body.name, body.language, body.timezone)
        assert row.id is not None
        if body.allow_public_broadcast or body.policy is not None:
            row = set_defender_options(
                ctx.engine,
                row.id,
                allow_public_broadcast=body.allow_public_broadcast,
                policy_name=body.policy,
            )
    return as_defender(session, row)


@router.get("/{defender_id}", response_model=Defender)
def get_defender(defender_id: PathId, session: DbSession, _: OperationsReader) -> Defender:
    return as_defender(session, get_or_404(session, DefenderRow, defender_id, "defender"))


@router.patch("/{defender_id}", response_model=Defender)
def update_defender(
    defender_id: PathId, body: DefenderUpdate, ctx: Context, session: DbSession, _: OperationsWriter
) -> Defender:
    row = get_or_404(session, DefenderRow, defender_id, "defender")
    if body.timezone is not None:
        with domain_errors():
            row.timezone = check_timezone(body.timezone)
    if body.name is not None:
        row.name = body.name
    if body.language is not None:
        row.language = body.language
    session.add(row)
    session.commit()
    with domain_errors():
        row = set_defender_options(
            ctx.engine,
            defender_id,
            allow_public_broadcast=body.allow_public_broadcast,
            policy_name=body.policy,
        )
    return as_defender(session, row)


@router.put(
    "/{defender_id}/codes",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Set the cancel and duress codes (stored hashed)",
)
def set_codes(
    defender_id: PathId, body: DefenderCodes, ctx: Context, session: DbSession, _: OperationsWriter
) -> Response:
    get_or_404(session, DefenderRow, defender_id, "defender")
    with domain_errors():
        set_defender_options(
            ctx.engine, defender_id, cancel_code=body.cancel_code, duress_code=body.duress_code
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
