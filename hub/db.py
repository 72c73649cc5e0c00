"""Database engine: SQLite in WAL mode with full fsync by default, PostgreSQL by URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from hub import models  # noqa: F401  (registers the tables)
from hub.api import tokens  # noqa: F401
from hub.conference import tables as conference_tables  # noqa: F401
from hub.fund import tables as fund_tables  # noqa: F401
from hub.webhooks import tables as webhook_tables  # noqa: F401


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created.

    SQLite gets ``journal_mode=WAL`` (readers never block the writer) and ``synchronous=FULL``
    (a committed alarm survives power loss: the device is acked only after this commit).
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
