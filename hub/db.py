"""Database engine: SQLite in WAL mode with full fsync by default, PostgreSQL by URL."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from hub import models  # noqa: F401  (registers the tables)
from hub.api import tokens  # noqa: F401
from hub.conference import tables as conference_tables  # noqa: F401
from hub.fund import tables as fund_tables  # noqa: F401
from hub.webhooks import tables as webhook_tables  # noqa: F401


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created.

    A SQLite file is created with mode 0600 and gets ``journal_mode=WAL`` (readers never block
    the writer) and ``synchronous=FULL`` (a committed alarm survives power loss: the device is
    acked only after this commit).
    """
    if url.startswith("sqlite"):
        _private_file(make_url(url).database)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine)
    return engine


def _private_file(database: str | None) -> None:
    """The SQLite file holds positions and names: only its owner may read it (mode 0600; SQLite
    gives its -wal and -shm files the same mode)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(database, 0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
