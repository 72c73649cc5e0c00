"""Store-and-forward on the device: alarms and cancels survive a crash until the hub has them.

A wristband may lose power, radio or its process at any moment. The rule that keeps an alarm from
being lost is simple: write it durably *before* publishing it, and forget it only when the hub's
:class:`~devicekit.protocol.HubAck` for its ``alarm_id`` arrives. The same store keeps the
per-device sequence number, so ``seq`` never repeats, even after ``kill -9``.

SQLite (stdlib) with ``synchronous=FULL`` gives us atomic, fsynced commits; every method commits
before it returns. The database and its journal files are private (mode 0600) because alarms
carry the defender's position.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar

from devicekit.protocol import AckStage, Alarm, Cancel, HubAck

DB_NAME: Final = "outbox.sqlite3"

#: How far an alarm has got; an ack never lowers what the device knows (acks can arrive twice
#: and out of order). ``cancelled`` and ``resolved`` both end the alarm.
STAGE_RANK: Final[dict[AckStage, int]] = {
    AckStage.RECEIVED: 0,
    AckStage.NOTIFIED: 1,
    AckStage.RESPONDER_COMING: 2,
    AckStage.RESOLVED: 3,
    AckStage.CANCELLED: 3,
}
#: Stages that settle a pending cancel: the hub accepted it, or HQ closed the alarm anyway.
_CANCEL_SETTLED: Final = (AckStage.CANCELLED.value, AckStage.RESOLVED.value)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS counter (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    channel  TEXT NOT NULL CHECK (channel IN ('alarm', 'cancel')),
    alarm_id TEXT NOT NULL,
    payload  BLOB NOT NULL,
    UNIQUE (channel, alarm_id)
);
CREATE TABLE IF NOT EXISTS last_ack (
    alarm_id TEXT PRIMARY KEY,
    rank     INTEGER NOT NULL,
    payload  BLOB NOT NULL
);
"""

PendingMessage = Alarm | Cancel
M = TypeVar("M", Alarm, Cancel)


class Outbox:
    """The durable queue of unacknowledged alarms and cancels, and the ``seq`` counter.

    Safe to share between threads (the MQTT network thread records acks while the application
    thread raises alarms). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.state_dir / DB_NAME
        _create_private(self.path)
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a second process on the
        # same state dir waits for the lock instead of handing out the same seq.
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    # -- sequence -----------------------------------------------------------------------------

    def next_seq(self) -> int:
        """Reserve and return the next sequence number (committed before it is returned)."""
        with self._transaction() as db:
            return _take_seq(db)

    # -- pending messages ---------------------------------------------------------------------

    def store_new(self, build: Callable[[int], M]) -> M:
        """Reserve a ``seq``, build the message with it and store it, in one durable commit.

        A cancel replaces an earlier unacknowledged cancel of the same alarm (the defender typed
        the code again); an alarm id is stored once.
        """
        with self._transaction() as db:
            message = build(_take_seq(db))
            db.execute(
                "INSERT OR REPLACE INTO pending (channel, alarm_id, payload) VALUES (?, ?, ?)",
                (message.type, message.alarm_id, message.to_payload()),
            )
        return message

    def pending(self) -> list[PendingMessage]:
        """Every alarm and cancel still waiting for the hub's ack, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT channel, payload FROM pending ORDER BY id").fetchall()
        return [_load(channel, payload) for channel, payload in rows]

    def pending_alarms(self) -> list[Alarm]:
        """The alarms (not cancels) still waiting for the hub's ack, oldest first."""
        return [message for message in self.pending() if isinstance(message, Alarm)]

    def is_pending(self, alarm_id: str) -> bool:
        """Whether the alarm ``alarm_id`` (or a cancel of it) still waits for an ack."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM pending WHERE alarm_id = ? LIMIT 1", (alarm_id,)
            ).fetchone()
        return row is not None

    # -- acks ---------------------------------------------------------------------------------

    def acknowledge(self, ack: HubAck) -> bool:
        """Record ``ack`` and drop what it settles; return whether it advanced the alarm's stage.

        Any ack settles the alarm itself: the hub acks only alarms it has stored. A cancel is
        settled only by ``cancelled`` or ``resolved``, not by the alarm's own progress acks.
        Duplicates and late, lower stages change nothing and return ``False``.
        """
        rank = STAGE_RANK[ack.stage]
        with self._transaction() as db:
            db.execute(
                "DELETE FROM pending WHERE channel = 'alarm' AND alarm_id = ?", (ack.alarm_id,)
            )
            if ack.stage.value in _CANCEL_SETTLED:
                db.execute(
                    "DELETE FROM pending WHERE channel = 'cancel' AND alarm_id = ?",
                    (ack.alarm_id,),
                )
            advanced = db.execute(
                "INSERT INTO last_ack (alarm_id, rank, payload) VALUES (?, ?, ?) "
                "ON CONFLICT (alarm_id) DO UPDATE SET rank = excluded.rank, "
                "payload = excluded.payload WHERE excluded.rank > last_ack.rank",
                (ack.alarm_id, rank, ack.to_payload()),
            ).rowcount
        return advanced > 0

    def last_ack(self, alarm_id: str) -> HubAck | None:
        """The furthest ack the hub has sent for ``alarm_id``, or ``None`` if none arrived yet."""
        with self._lock:
            row = self._db.execute(
                "SELECT payload FROM last_ack WHERE alarm_id = ?", (alarm_id,)
            ).fetchone()
        return None if row is None else HubAck.model_validate_json(row[0])

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; everything was already committed."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def _take_seq(db: sqlite3.Connection) -> int:
    row = db.execute(
        "INSERT INTO counter (name, value) VALUES ('seq', 1) "
        "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
    ).fetchone()
    return int(row[0]) - 1


def _load(channel: str, payload: bytes) -> PendingMessage:
    if channel == "alarm":
        return Alarm.model_validate_json(payload)
    return Cancel.model_validate_json(payload)


def _create_private(path: Path) -> None:
    """Create ``path`` with mode 0600 (SQLite gives its -wal/-shm files the same mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
