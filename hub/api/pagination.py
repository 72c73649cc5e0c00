"""Keyset pagination: ``?limit=50&cursor=...`` -> ``{"items": [...], "next_cursor": ...}``.

Cursors are opaque to clients (they encode the last id seen), stable while rows are added, and
cheap on any table size: no OFFSET. A page is always in the order of the rows' own ids (time
order); a caller who is shown other ids (``hub.outside_ids``: outside HQ) gets a cursor holding
the id it was shown of the page's last item, mapped back when it returns, so a cursor tells it
nothing its page did not.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Query
from sqlmodel import Session, col

from hub.api.errors import ApiError
from hub.outside_ids import ROW_IDS, Ids
from sdk.models import MAX_ID, Page

T = TypeVar("T")

MAX_LIMIT = 200
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[
    str | None,
    Query(max_length=100, description="`next_cursor` of the previous page."),
]


class BadCursor(ApiError):
    status = 400
    code = "bad_cursor"


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = raw.partition(":")
        if version != "v1" or not value.isdigit() or len(value) > 10 or int(value) > MAX_ID:
            raise ValueError(raw)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("this cursor is not valid; use next_cursor from the last page") from None


def paginate(
    session: Session,
    query: Any,
    id_column: Any,
    convert: Callable[[Any], T],
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
    ids: Ids = ROW_IDS,
) -> Page[T]:
    """One page of ``query`` (a ``select(Table)`` with its filters) ordered by ``id_column``;
    ``ids``: how the caller sees the ids of that column (its cursors hold those)."""
    return paginate_rows(
        session,
        query,
        id_column,
        lambda rows: [convert(row) for row in rows],
        limit=limit,
        cursor=cursor,
        newest_first=newest_first,
        ids=ids,
    )


def paginate_rows(
    session: Session,
    query: Any,
    id_column: Any,
    convert: Callable[[Sequence[Any]], list[T]],
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
    ids: Ids = ROW_IDS,
) -> Page[T]:
    """:func:`paginate` with ``convert`` given the page's rows at once (one query for what
    they refer to, not one per row)."""
    column = col(id_column)
    if cursor is not None:
        last = ids.raw(decode_cursor(cursor))
        query = query.where(column < last if newest_first else column > last)
    query = query.order_by(column.desc() if newest_first else column).limit(limit + 1)
    rows: Sequence[Any] = list(session.exec(query))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(ids.shown(_id_of(rows[-1]))) if more and rows else None
    return Page[T](items=convert(rows), next_cursor=next_cursor)


def _id_of(row: Any) -> int:
    return int(row.id)
