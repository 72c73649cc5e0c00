"""``/v1/me`` and ``/v1/tokens``: who am I, and token management (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from sqlmodel import col, select

from hub.api.auth import DbSession, require
from hub.api.errors import Invalid, NotFound
from hub.api.pagination import Cursor, Limit, paginate
from hub.api.permissions import ROLE_PERMISSIONS, Permission
from hub.api.routes._common import PathId
from hub.api.tokens import ApiToken, Principal, TokenError, create_token, revoke_token
from sdk.models import Me, Page, Token, TokenCreated, TokenIn

router = APIRouter(tags=["tokens"])


def _token(row: ApiToken) -> Token:
    return Token.model_validate(row)


@router.get("/me", response_model=Me, summary="The calling token and its permissions")
def me(principal: Annotated[Principal, Depends(require(Permission.SELF))]) -> Me:
    return Me(
        token_id=principal.token_id,
        name=principal.name,
        role=principal.role,
        permissions=sorted(p.value for p in ROLE_PERMISSIONS[principal.role]),
    )


@router.get("/tokens", response_model=Page[Token], summary="API tokens (never their secrets)")
def list_tokens(
    session: DbSession,
    _: Annotated[Principal, Depends(require(Permission.ADMIN))],
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Token]:
    return paginate(session, select(ApiToken), ApiToken.id, _token, limit=limit, cursor=cursor)


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create a token; its secret is in this response only",
)
def create(
    body: TokenIn,
    request: Request,
    _: Annotated[Principal, Depends(require(Permission.ADMIN))],
) -> TokenCreated:
    try:
        row, secret = create_token(
            request.app.state.api.engine, body.name, body.role, body.expires_at
        )
    except TokenError as exc:
        raise Invalid(str(exc)) from None
    return TokenCreated(**_token(row).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", response_model=Token, summary="Revoke a token at once")
def revoke(
    token_id: PathId,
    request: Request,
    session: DbSession,
    _: Annotated[Principal, Depends(require(Permission.ADMIN))],
) -> Token:
    if session.exec(select(ApiToken.id).where(col(ApiToken.id) == token_id)).first() is None:
        raise NotFound(f"no token {token_id}")
    return _token(revoke_token(request.app.state.api.engine, token_id))
