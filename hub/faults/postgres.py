"""A scratch PostgreSQL database, and an outage of it, without stopping the server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import make_url


def _admin_connect(server_url: str) -> Any:
    import psycopg

    url = make_url(server_url)
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    )


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``, dropped afterwards; yields its URL.

    ``server_url`` is only used to connect (its database is never touched); its role needs
    CREATEDB.
    """
    name = f"natalia_chaos_{uuid.uuid4().hex[:10]}"
    with _admin_connect(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin_connect(server_url) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database_outage(server_url: str, database_url: str) -> Iterator[None]:
    """The database of ``database_url`` refuses new connections and loses its sessions; the
    server keeps running for everyone else. Connections are allowed again on exit."""
    name = make_url(database_url).database
    with _admin_connect(server_url) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    try:
        yield
    finally:
        with _admin_connect(server_url) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
