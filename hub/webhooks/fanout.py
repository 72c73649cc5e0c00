"""Fan events out to webhook subscriptions: one delivery row per (subscription, matching event).

Each subscription has a cursor per source (``WebhookCursor``). A round locks the cursors
(``FOR UPDATE SKIP LOCKED``: a second hub on the same PostgreSQL skips them, and takes them on
its next round), reads the source's settled rows after the lowest cursor (``hub.tail``: none
skipped, none twice), inserts the deliveries of every matching event — the unique
(subscription, event) constraint ignores any already there — and moves the cursors, all in one
transaction: a crash between two steps repeats nothing and loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from hub.clock import Clock
from hub.outside_ids import outside_ids
from hub.tail import Settler
from hub.webhooks import subscriptions
from hub.webhooks.sources import SOURCES, TableSource
from hub.webhooks.tables import WebhookCursor, WebhookDelivery
from hub.webhooks.tables import WebhookSubscription as Subscription

#: Events read per source and round.
BATCH = 500


class Fanout:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        sources: list[TableSource[Any]] | None = None,
        settler: Callable[[], Settler] = Settler,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.sources = SOURCES if sources is None else sources
        self._settlers = {source.name: settler() for source in self.sources}

    def fan_out(self) -> int:
        """Create the deliveries of every new event; returns how many."""
        # The ids receivers are shown need the deployment's key (hub.outside_ids): read, or
        # made, before a round's transaction, whose write lock would hold the making up (SQLite).
        outside_ids(self.engine)
        created = 0
        for source in self.sources:
            with Session(self.engine) as session:
                created += self._fan_out(session, source)
                session.commit()
        return created

    def _fan_out(self, session: Session, source: TableSource[Any]) -> int:
        hooks = {
            hook.id: hook
            for hook in session.exec(select(Subscription).where(col(Subscription.active))).all()
            if hook.id is not None
        }
        if not hooks:
            return 0
        self._add_missing_cursors(session, source, list(hooks))
        cursors = session.exec(
            select(WebhookCursor)
            .where(
                WebhookCursor.source == source.name,
                col(WebhookCursor.webhook_id).in_(list(hooks)),
            )
            .with_for_update(skip_locked=True)
        ).all()
        if not cursors:
            return 0
        low = min(cursor.position for cursor in cursors)
        rows = source.after(session, low, BATCH)
        settled = self._settlers[source.name].settle(low, [position for position, _ in rows])
        if not settled:
            return 0
        read_up_to = rows[settled - 1][0]  # rows no receiver gets are passed over, too
        found = [source.to_event(session, row) for _, row in rows[:settled]]
        events = [event for event in found if event is not None]
        bodies = {event.id: event.body() for event in events}
        now = self.clock.now()
        new_rows = []
        for cursor in cursors:
            hook = hooks[cursor.webhook_id]
            for event in events:
                if event.position > cursor.position and subscriptions.matches(
                    hook.events, event.type
                ):
                    new_rows.append(
                        WebhookDelivery(
                            webhook_id=cursor.webhook_id,
                            event_id=event.id,
                            event_type=event.type,
                            body=bodies[event.id],
                            created_at=now,
                        )
                    )
            cursor.position = max(cursor.position, read_up_to)
            session.add(cursor)
        _insert_ignoring_duplicates(session, WebhookDelivery, new_rows)
        return len(new_rows)

    @staticmethod
    def _add_missing_cursors(
        session: Session, source: TableSource[Any], hook_ids: list[int]
    ) -> None:
        """A source added after a subscription was made starts at its current end, too."""
        have = set(
            session.exec(
                select(WebhookCursor.webhook_id).where(WebhookCursor.source == source.name)
            ).all()
        )
        missing = [hook_id for hook_id in hook_ids if hook_id not in have]
        if missing:
            latest = source.latest(session)
            cursors = [
                WebhookCursor(webhook_id=h, source=source.name, position=latest) for h in missing
            ]
            _insert_ignoring_duplicates(session, WebhookCursor, cursors)


def _insert_ignoring_duplicates(session: Session, table: type[SQLModel], rows: list[Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: rows another transaction made first stay as they are."""
    if not rows:
        return
    values = [row.model_dump(exclude={"id"}) for row in rows]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(values).on_conflict_do_nothing()
    else:
        raise RuntimeError(f"webhooks need SQLite or PostgreSQL, not {dialect}")
    session.execute(statement)
