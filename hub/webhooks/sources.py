"""Where webhook events come from: append-only tables, one event per row.

A source has a ``name`` — also the first part of its event types ("alarm" gives
"alarm.acknowledged") — the table's growing integer id (each subscription's cursor in that
source) and a function that turns one row into an event, or into None when the row is not for
receivers: they are outside HQ, so an alarm event for HQ only (``hub.disclosure``) is never
sent, and the alarm in every event is as ``hub.disclosure.outside_view`` shows it.

Adding a source is a few lines, as the fund requests' audit trail shows below::

    def _fund_request_event(session: Session, row: FundRequestEvent) -> SourceEvent:
        return SourceEvent(
            position=row.id,
            id=f"fund_request_event.{row.id}",
            type=f"fund_request.{row.to_state or row.action}",
            created_at=aware(row.at),
            data={"event": ..., "request": ...},
        )

    SOURCES.append(TableSource("fund_request", FundRequestEvent, FundRequestEvent.id,
                               _fund_request_event))

Event ids must be unique and stable (the receiver's idempotency key), so they name the row;
an alarm event by the id it is shown with outside HQ (``hub.outside_ids``: the events for HQ
only, never sent, must not leave gaps in the numbers receivers see).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlmodel import Session, SQLModel, col, func, select

from hub.api.views import outside_alarm_view, outside_event_view
from hub.fund.tables import FundAction, FundRequest, FundRequestEvent
from hub.fund.views import as_fund_event, as_fund_request
from hub.models import Alarm, AlarmEvent
from hub.outside_ids import outside_ids_of
from sdk.models import WebhookEvent

Row = TypeVar("Row", bound=SQLModel)


@dataclass(frozen=True)
class SourceEvent:
    position: int  #: the row's id in its table
    id: str
    type: str
    created_at: datetime
    data: dict[str, Any]

    def body(self) -> str:
        """The JSON body POSTed to receivers (a ``WebhookEvent``)."""
        event = WebhookEvent(id=self.id, type=self.type, created_at=self.created_at, data=self.data)
        return event.model_dump_json()


@dataclass(frozen=True)
class TableSource(Generic[Row]):
    name: str
    table: type[Row]
    id_column: Any
    #: None: the row is not for webhook receivers (the cursor still moves past it).
    to_event: Callable[[Session, Row], SourceEvent | None]

    def latest(self, session: Session) -> int:
        """The newest row's id: where a new subscription starts (no flood of history)."""
        return int(session.exec(select(func.max(col(self.id_column)))).one() or 0)

    def after(self, session: Session, position: int, limit: int) -> list[tuple[int, Row]]:
        """Up to ``limit`` rows after ``position``, oldest first, with their ids."""
        column = col(self.id_column)
        rows = session.exec(
            select(self.table).where(column > position).order_by(column).limit(limit)
        ).all()
        return [(int(getattr(row, self.id_column.key)), row) for row in rows]


def aware(moment: datetime) -> datetime:
    """A stored time as aware UTC (SQLite gives naive ones back)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _alarm_event(session: Session, row: AlarmEvent) -> SourceEvent | None:
    """``alarm.<kind>``: the timeline entry and the alarm as it is now, as those outside HQ may
    see them; None for an event that is for HQ only."""
    assert row.id is not None
    if row.hq_only:
        return None
    alarm = session.get(Alarm, row.alarm_pk)
    assert alarm is not None  # a foreign key
    event = outside_event_view(row, outside_ids_of(session).events)  # roles, not people
    return SourceEvent(
        position=row.id,
        id=f"alarm_event.{event.id}",
        type=f"alarm.{row.kind}",
        created_at=aware(row.at),
        data={
            "event": event.model_dump(mode="json"),
            "alarm": outside_alarm_view(alarm).model_dump(mode="json"),
        },
    )


def _fund_request_event(session: Session, row: FundRequestEvent) -> SourceEvent:
    """``fund_request.created`` / ``.updated`` / ``.<new state>``: the audit entry and the
    request as it is now."""
    assert row.id is not None
    request = session.get(FundRequest, row.request_id)
    assert request is not None  # a foreign key
    kind = row.to_state if row.action == FundAction.STATE and row.to_state else row.action
    return SourceEvent(
        position=row.id,
        id=f"fund_request_event.{row.id}",
        type=f"fund_request.{kind}",
        created_at=aware(row.at),
        data={
            "event": as_fund_event(row, _fund_actor(row.actor, request)).model_dump(mode="json"),
            "request": as_fund_request(request, for_hq=False).model_dump(mode="json"),
        },
    )


def _fund_actor(actor: str, request: FundRequest) -> str:
    """The submitting system by its name (the receiver's own), HQ's people as ``hq``."""
    return actor if actor == request.created_by else "hq"


SOURCES: list[TableSource[Any]] = [
    TableSource("alarm", AlarmEvent, AlarmEvent.id, _alarm_event),
    TableSource("fund_request", FundRequestEvent, FundRequestEvent.id, _fund_request_event),
]


def source_names() -> list[str]:
    return [source.name for source in SOURCES]
