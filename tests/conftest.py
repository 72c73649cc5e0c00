"""Fixtures shared by the whole suite: real broker, real SMTP and HTTP receivers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.sealing import KEYS_ENV, Keyring
from hub.store import Store
from tests.support.api import ApiHub, api_hub
from tests.support.brokers import RunningBroker, start_broker
from tests.support.handler import DirectHandler
from tests.support.receivers import HTTPReceiver, SMTPReceiver

# Every engine and hub of the suite (and the hubs it starts as processes) seals positions with
# this session's key (hub/sealing.py). tests/test_sealing.py tests the key file without it.
os.environ.setdefault(KEYS_ENV, Keyring.generate().entries().strip())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    """A Mosquitto on a free port with the shipped config; the hub account exists."""
    running = start_broker(tmp_path / "broker")
    try:
        yield running
    finally:
        running.process.stop()


@pytest.fixture
def smtp_server() -> Iterator[SMTPReceiver]:
    receiver = SMTPReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    receiver = HTTPReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


POSTGRES_URL = os.environ.get(
    "NATALIA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL for this test session, dropped afterwards.

    PostgreSQL is required: .ci/run starts it. A missing server fails the tests, never skips them.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL)
    name = f"natalia_test_{uuid.uuid4().hex[:10]}"
    conninfo = f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs twice: on SQLite (WAL) and on PostgreSQL (fresh schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'natalia.db'}"
        return
    server_url = request.getfixturevalue("postgres_server_url")
    from sqlmodel import SQLModel

    from hub.db import make_engine

    yield server_url
    engine = make_engine(server_url)
    SQLModel.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def handler(store: Store) -> Iterator[DirectHandler]:
    """The hub's message handler on the module's ``store``, called without a broker."""
    running = DirectHandler(store)
    yield running
    running.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiHub]:
    """One real hub with its API per test module (SQLite); tests add their own data."""
    with api_hub(tmp_path_factory.mktemp("api")) as running:
        yield running
