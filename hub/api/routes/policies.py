"""``/v1/policies``: escalation policies (who is told, when, on which condition).

``default`` applies to every defender without a policy of their own; until one is stored, it is
the built-in ``hub.escalation.DEFAULT_POLICY``, listed here like any other.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from hub.api.errors import Conflict, NotFound
from hub.api.pagination import Cursor, Limit, encode_cursor, paginate
from hub.api.routes._common import (
    DbSession,
    OperationsReader,
    PolicyWriter,
    domain_errors,
)
from hub.escalation import DEFAULT_POLICY, DEFAULT_POLICY_NAME, parse_policy, save_policy
from hub.models import EscalationPolicy
from sdk.models import Page, Policy, PolicyIn

router = APIRouter(prefix="/policies", tags=["policies"])

PolicyName = Annotated[
    str, PathParam(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]

#: Any name a policy may have been stored under (the CLI accepts more than PUT does).
StoredName = Annotated[str, PathParam(max_length=200, pattern=r"^[^\x00]+$")]

#: The built-in default, shown when none is stored. It sorts before every stored policy: on the
#: first page it takes the place a row with id 0 would.
BUILT_IN = Policy(name=DEFAULT_POLICY_NAME, document=DEFAULT_POLICY.model_dump(mode="json"))


def as_policy(row: EscalationPolicy) -> Policy:
    return Policy(name=row.name, document=row.document)


@router.get("", response_model=Page[Policy], summary="Policies, built-in default first")
def list_policies(
    session: DbSession, _: OperationsReader, limit: Limit = 50, cursor: Cursor = None
) -> Page[Policy]:
    query = select(EscalationPolicy)
    if cursor is not None or _stored(session, DEFAULT_POLICY_NAME) is not None:
        return paginate(session, query, EscalationPolicy.id, as_policy, limit=limit, cursor=cursor)
    if limit == 1:
        more = session.exec(select(EscalationPolicy.id)).first() is not None
        return Page[Policy](items=[BUILT_IN], next_cursor=encode_cursor(0) if more else None)
    rest = paginate(session, query, EscalationPolicy.id, as_policy, limit=limit - 1, cursor=None)
    return Page[Policy](items=[BUILT_IN, *rest.items], next_cursor=rest.next_cursor)


@router.get("/{name}", response_model=Policy)
def get_policy(name: StoredName, session: DbSession, _: OperationsReader) -> Policy:
    row = _stored(session, name)
    if row is not None:
        return as_policy(row)
    if name == DEFAULT_POLICY_NAME:
        return BUILT_IN
    raise NotFound(f"no escalation policy {name!r}")


@router.put(
    "/{name}",
    response_model=Policy,
    summary="Create or replace a policy; stages still waiting use it too",
)
def put_policy(name: PolicyName, body: PolicyIn, session: DbSession, _: PolicyWriter) -> Policy:
    with domain_errors():
        policy = parse_policy(body.document)
    try:
        row = save_policy(session, name, policy)
        session.commit()
    except IntegrityError:  # created by another request at the same moment
        raise Conflict(f"policy {name!r} was created meanwhile; send it again") from None
    session.refresh(row)
    return as_policy(row)


def _stored(session: Session, name: str) -> EscalationPolicy | None:
    query = select(EscalationPolicy).where(col(EscalationPolicy.name) == name)
    return session.exec(query).first()
