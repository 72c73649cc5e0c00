"""Helpers shared by the route modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Query, Request
from sqlmodel import Session, SQLModel

from hub.admin import AdminError, DeviceIdTaken
from hub.api.auth import DbSession, require
from hub.api.context import ApiContext
from hub.api.errors import Conflict, Invalid, NotFound
from hub.api.permissions import Permission
from hub.api.tokens import Principal
from hub.egress import EgressRefused, check_url
from hub.escalation import PolicyError
from hub.lifecycle import LifecycleError
from hub.plugin_api import InvalidChannelURL
from sdk.models import MAX_ID

Table = TypeVar("Table", bound=SQLModel)
__all__ = ["DbSession"]


def context(request: Request) -> ApiContext:
    found: ApiContext = request.app.state.api
    return found


Context = Annotated[ApiContext, Depends(context)]

#: Row ids in paths and filters: bounded, so an absurd number is a 422, not a database error.
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]

# One alias per permission, so a route's signature says what it needs.
OperationsReader = Annotated[Principal, Depends(require(Permission.OPERATIONS_READ))]
ContactsReader = Annotated[Principal, Depends(require(Permission.CONTACTS_READ))]
OperationsWriter = Annotated[Principal, Depends(require(Permission.OPERATIONS_WRITE))]
PolicyWriter = Annotated[Principal, Depends(require(Permission.POLICIES_WRITE))]
AlarmReader = Annotated[Principal, Depends(require(Permission.ALARMS_READ))]
AlarmActor = Annotated[Principal, Depends(require(Permission.ALARMS_ACT))]
FundReader = Annotated[Principal, Depends(require(Permission.FUND_READ))]
FundWriter = Annotated[Principal, Depends(require(Permission.FUND_WRITE))]
FundReviewer = Annotated[Principal, Depends(require(Permission.FUND_REVIEW))]
EventsReader = Annotated[Principal, Depends(require(Permission.EVENTS_READ))]
EventsWriter = Annotated[Principal, Depends(require(Permission.EVENTS_WRITE))]
Admin = Annotated[Principal, Depends(require(Permission.ADMIN))]


def get_or_404(session: Session, table: type[Table], key: object, what: str) -> Table:
    row = session.get(table, key)
    if row is None:
        raise NotFound(f"no {what} {key}")
    return row


@contextlib.contextmanager
def domain_errors() -> Iterator[None]:
    """The hub's own errors as problems: bad requests are 422, wrong states are 409."""
    try:
        yield
    except DeviceIdTaken as exc:
        raise Conflict(str(exc)) from None
    except (AdminError, InvalidChannelURL, PolicyError) as exc:
        raise Invalid(str(exc)) from None
    except LifecycleError as exc:
        raise Conflict(str(exc)) from None


def check_destinations(ctx: ApiContext, *urls: str | None, resolve: bool = False) -> None:
    """Refuse URLs that point the hub at an internal address (hub/egress.py) with a 422.

    ``resolve``: the URL's host is surely the destination (a webhook), so a name is resolved
    too; a channel URL's host may be a token or a topic, so only literal addresses and
    ``localhost`` are refused here, and the rest when the hub connects.
    """
    if ctx.egress is None:
        return
    for url in urls:
        if url is None:
            continue
        try:
            check_url(url, ctx.egress, resolve=resolve)
        except EgressRefused as exc:
            raise Invalid(str(exc)) from None
