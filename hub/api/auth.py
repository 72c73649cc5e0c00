"""Bearer-token authentication and the per-route permission check.

Every route depends on ``require(Permission.X)``: no token or an unknown one is a 401 with
``WWW-Authenticate: Bearer``; a valid token whose role lacks the permission is a 403.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from hub.api.errors import ApiError
from hub.api.permissions import Permission, allows
from hub.api.tokens import Principal, authenticate

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer nat_...`")


def get_session(request: Request) -> Iterator[Session]:
    """A database session for one request (routes are sync: FastAPI runs them in its threads)."""
    with Session(request.app.state.api.engine) as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"
    headers = {"WWW-Authenticate": 'Bearer realm="natalia"'}


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


def require(permission: Permission) -> Callable[..., Principal]:
    """A dependency: the caller's principal, once it holds ``permission``."""

    def check(
        session: DbSession,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthenticated("send an API token: Authorization: Bearer nat_...")
        principal = authenticate(session, credentials.credentials)
        if principal is None:
            raise Unauthenticated("this API token is not valid (unknown, revoked or expired)")
        if not allows(principal.role, permission):
            raise Forbidden(
                f"the {principal.role.value} role may not do this (needs {permission.value})"
            )
        return principal

    check.permission = permission  # type: ignore[attr-defined]  # read by the role-matrix test
    return check


def permission_of(dependency: Callable[..., object]) -> Permission | None:
    found = getattr(dependency, "permission", None)
    return found if isinstance(found, Permission) else None
