"""Database engine: SQLite in WAL mode with full fsync by default, PostgreSQL by URL."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine

from hub import models  # noqa: F401  (registers the tables)
from hub.api import tokens  # noqa: F401
from hub.conference import tables as conference_tables  # noqa: F401
from hub.fund import tables as fund_tables  # noqa: F401
from hub.sealing import Keyring, attach, configured_keyring
from hub.webhooks import tables as webhook_tables  # noqa: F401

if TYPE_CHECKING:
    from hub.config import HubConfig


def engine_for(config: HubConfig) -> Engine:
    """The engine of this config's database, with its position keys (hub/sealing.py)."""
    return make_engine(config.database.url, configured_keyring(config.storage))


def make_engine(url: str, keyring: Keyring | None = None) -> Engine:
    """An engine for ``url`` with the tables created.

    Positions and secrets are sealed with ``keyring`` (hub/sealing.py); without one, with the
    keys in ``NATALIA_POSITION_KEYS`` (``KeyringError`` when it is not set).

    A SQLite file is created with mode 0600 and gets ``journal_mode=WAL`` (readers never block
    the writer) and ``synchronous=FULL`` (a committed alarm survives power loss: the device is
    acked only after this commit).
    """
    keyring = keyring or Keyring.from_environment()
    # hide_parameters: a database error's message never carries a value (a position, a key).
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # Times are stored as UTC without an offset: the session must be in UTC, or PostgreSQL
        # shifts each one by the server's zone (and 9999-12-31 east of UTC no longer reads back).
        given = make_url(url).query.get("options")  # the operator's own, kept
        options = " ".join([*([given] if isinstance(given, str) else []), "-c TimeZone=UTC"])
        engine = create_engine(
            url, pool_pre_ping=True, hide_parameters=True, connect_args={"options": options}
        )
    attach(engine, keyring)
    SQLModel.metadata.create_all(engine)
    if url.startswith("sqlite"):
        _owner_only(make_url(url).database)
    return engine


def _owner_only(database: str | None) -> None:
    """The SQLite files hold positions and names: only their owner may read them (0600).

    Only ``chmod``: opening and closing another descriptor to a database this process has open
    would drop SQLite's POSIX locks on it (sqlite.org/howtocorrupt.html). SQLite gives the -wal
    and -shm files it creates later the database file's mode.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(database + suffix, 0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
