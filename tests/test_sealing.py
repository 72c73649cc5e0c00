"""Positions and secrets are encrypted at rest (hub/sealing.py): the keyring, its key file and
its errors, and — after a real alarm went through a real hub on SQLite and on PostgreSQL — a
database whose raw bytes hold none of the coordinates."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Select, Text, literal_column, select, text, type_coerce
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError
from sqlmodel import Session, SQLModel

from devicekit.protocol import Alarm, AlarmKind, Position, utcnow
from hub.config import DatabaseConfig, HubConfig, StorageConfig, load_config
from hub.db import make_engine
from hub.models import Alarm as AlarmRow
from hub.models import Device, RejectedMessage
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.responders import add_responder, list_responders, record_position_by_id
from hub.sealing import (
    KEYS_ENV,
    Keyring,
    KeyringError,
    SealError,
    key_id_of,
    parse_entries,
    write_key_file,
)
from hub.service import Hub
from hub.setup import init_directory
from hub.store import Store
from hub.webhooks import subscriptions
from hub.webhooks.tables import WebhookDelivery
from tests.support.device import RawDevice
from tests.support.hubs import RunningHub, hub_config
from tests.support.population import populate
from tests.support.receivers import wait_until

# Places that appear nowhere else in the suite: finding them in the raw database is a leak.
ALARM_POSITION = (-33.86785, 151.20732, 11.0)  # the wristband
RESPONDER_POSITION = (-33.87096, 151.20651, 4.0)  # a volunteer nearby


# --- the keyring -----------------------------------------------------------------------------


def test_a_sealed_value_names_its_key_and_opens_to_exactly_what_was_sealed() -> None:
    keyring = Keyring.generate()
    sealed = keyring.seal(repr(-33.86785).encode(), "alarm.lat")
    assert sealed.startswith(f"v1:{keyring.current}:") and "33.86" not in sealed
    assert key_id_of(sealed) == keyring.current
    assert float(keyring.open(sealed, "alarm.lat")) == -33.86785
    assert keyring.seal(b"same", "x") != keyring.seal(b"same", "x")  # a fresh nonce each time


def test_altered_or_moved_ciphertext_is_detected() -> None:
    keyring = Keyring.generate()
    sealed = keyring.seal(b"-33.86785", "alarm.lat")
    head, body = sealed.rsplit(":", 1)
    flipped = body[:20] + ("A" if body[20] != "A" else "B") + body[21:]
    with pytest.raises(SealError, match="failed its integrity check"):
        keyring.open(f"{head}:{flipped}", "alarm.lat")
    with pytest.raises(SealError, match="failed its integrity check"):
        keyring.open(sealed, "alarm.lon")  # copied into another column
    with pytest.raises(SealError, match="failed its integrity check"):
        keyring.open(sealed[:-8], "alarm.lat")  # truncated
    with pytest.raises(SealError, match="not sealed"):
        keyring.open("-33.86785", "alarm.lat")


def test_a_wrong_key_is_a_clear_error_that_shows_no_value() -> None:
    keyring = Keyring.generate()
    sealed = keyring.seal(b"-33.86785", "alarm.lat")
    other = Keyring.generate()
    with pytest.raises(SealError, match="not in the keyring") as raised:
        other.open(sealed, "alarm.lat")
    assert keyring.current in str(raised.value) and "33.86" not in str(raised.value)
    # The same id with other key bytes: the tag does not match.
    impostor = Keyring({keyring.current: b"\x01" * 32})
    with pytest.raises(SealError, match="integrity"):
        impostor.open(sealed, "alarm.lat")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("k1", "expected '<id>:<base64 key>'"),
        ("bad id:AAAA", "expected"),
        ("k1:not*base64", "not valid base64"),
        ("k1:" + "A" * 20, "must be 32 bytes"),
        ("k1:" + "A" * 43 + "= k1:" + "B" * 43 + "=", "appears twice"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_them(text: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as raised:
        parse_entries(text, "test keys")
    assert "A" * 20 not in str(raised.value)


def test_keys_from_the_environment_win_over_the_file(tmp_path: Path, monkeypatch) -> None:
    from hub.sealing import configured_keyring

    file_keys = Keyring.generate()
    write_key_file(tmp_path / "position.keys", file_keys, replace=False)
    storage = StorageConfig(position_keys_file=tmp_path / "position.keys")
    env_keys = Keyring.generate()
    monkeypatch.setenv(KEYS_ENV, env_keys.entries().replace("\n", " "))
    assert configured_keyring(storage).key_ids == env_keys.key_ids
    monkeypatch.delenv(KEYS_ENV)
    from_file = configured_keyring(storage)
    assert from_file.key_ids == file_keys.key_ids and from_file.source == storage.position_keys_file


def test_natalia_init_creates_a_private_key_file_the_config_points_to(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv(KEYS_ENV)
    config_path = init_directory(tmp_path / "site", port=1883, http_port=8080)
    config = load_config(config_path)
    keys_file = tmp_path / "site" / "position.keys"
    assert config.storage.position_keys_file == keys_file.resolve()
    assert keys_file.stat().st_mode & 0o777 == 0o600
    keyring = Keyring.from_file(keys_file)
    assert len(keyring.key_ids) == 1
    engine = make_engine(config.database.url, keyring)  # works without the environment
    engine.dispose()
    # Initialising again (the config removed) keeps the key: it may seal a database.
    config_path.unlink()
    init_directory(tmp_path / "site", port=1883, http_port=8080)
    assert Keyring.from_file(keys_file).key_ids == keyring.key_ids


def test_a_hub_without_keys_refuses_to_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(KEYS_ENV)
    database = DatabaseConfig(url=f"sqlite:///{tmp_path / 'natalia.db'}")
    registry = NotifierRegistry([])
    missing = HubConfig(
        database=database, storage=StorageConfig(position_keys_file=tmp_path / "position.keys")
    )
    with pytest.raises(KeyringError, match="not found: create it with `natalia keys init`"):
        Hub(missing, registry=registry)
    nothing = HubConfig(database=database, storage=StorageConfig(position_keys_file=None))
    with pytest.raises(KeyringError, match=f"no position keys: {KEYS_ENV} is not set"):
        Hub(nothing, registry=registry)
    with pytest.raises(KeyringError, match="no position keys"):
        make_engine(database.url)  # nor does any other engine
    assert not (tmp_path / "natalia.db").exists()  # nothing was stored in clear


def test_an_engine_without_a_keyring_cannot_touch_sealed_columns(tmp_path: Path) -> None:
    from sqlmodel import create_engine

    url = f"sqlite:///{tmp_path / 'natalia.db'}"
    make_engine(url).dispose()  # the tables
    bare = create_engine(url)
    with Session(bare) as session, pytest.raises(StatementError) as raised:
        session.add(RejectedMessage(topic="t", reason="r", payload=b"secret", payload_size=6))
        session.commit()
    assert isinstance(raised.value.orig, KeyringError)
    assert "no position keys" in str(raised.value.orig)
    bare.dispose()


# --- a real alarm through a real hub, then the raw database -----------------------------------


def _needles(*positions: tuple[float, float, float]) -> list[bytes]:
    """Every form a coordinate takes when stored in clear: text (as stored, as in the messages,
    rounded) and SQLite's binary REAL."""
    found: list[bytes] = []
    for lat, lon, _ in positions:
        for value in (lat, lon):
            found += [repr(value).encode(), f"{value:.5f}".encode(), f"{value:.4f}".encode()]
            found += [struct.pack(">d", value), struct.pack("<d", value)]
    return found


def _raw_sqlite(url: str) -> bytes:
    path = Path(url.removeprefix("sqlite:///"))
    return b"".join(
        Path(f"{path}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{path}{suffix}").exists()
    )


def _raw_postgres(engine: Engine) -> bytes:
    """Every row of every table as PostgreSQL renders it (floats as decimals)."""
    with engine.connect() as connection:
        rows: list[str] = []
        for table in SQLModel.metadata.sorted_tables:
            everything: Select[str] = select(literal_column("CAST(t AS text)"))
            rows += connection.execute(
                everything.select_from(text(f'"{table.name}" AS t'))
            ).scalars()
        return "\n".join(rows).encode()


def _count(engine: Engine, table: type[SQLModel]) -> int:
    with engine.connect() as connection:
        return len(connection.execute(select(table.__table__)).all())  # type: ignore[attr-defined]


@pytest.fixture
def file_keys(tmp_path: Path, monkeypatch) -> Keyring:
    """Keys from a key file only, as in production (not the suite's environment keys)."""
    path = tmp_path / "position.keys"
    write_key_file(path, Keyring.generate(), replace=False)
    monkeypatch.delenv(KEYS_ENV)
    return Keyring.from_file(path)


def test_no_coordinate_reaches_the_database_in_clear(
    database_url, broker, smtp_server, http_receiver, tmp_path, file_keys
) -> None:
    engine = make_engine(database_url, file_keys)
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    people = populate(
        engine,
        registry,
        broker.process.settings.data_dir,
        contacts={
            "Sister": smtp_server.url("sister@example.org"),
            "Partner NGO": f"json://127.0.0.1:{http_receiver.port}/alerts",
        },
    )
    broker.add_account(people.device_id, people.device_password)
    volunteer = add_responder(engine, "Volunteer", "console://", radius_m=5000)
    assert volunteer.id is not None
    rlat, rlon, racc = RESPONDER_POSITION
    record_position_by_id(engine, volunteer.id, rlat, rlon, racc, datetime.now(UTC))
    with Session(engine) as session:  # a receiver that is down: the event body stays stored
        _, hook_secret = subscriptions.create(
            session, "http://127.0.0.1:9/hook", ["alarm.*"], "down", "test"
        )

    config = hub_config(broker, database_url)
    config.storage = StorageConfig(position_keys_file=file_keys.source)
    lat, lon, accuracy = ALARM_POSITION
    alarm = Alarm(
        alarm_id="at-rest-1",
        kind=AlarmKind.PANIC,
        ts=utcnow(),
        seq=1,
        position=Position(lat=lat, lon=lon, accuracy_m=accuracy, fix_ts=utcnow()),
    )
    refused = f'{{"v": 1, "type": "alarm", "lat": {lat}, "lon": {lon}}}'.encode()
    store = Store(engine)
    device = RawDevice(
        broker.host, broker.port, people.device_id, people.device_password, people.device_key
    )
    try:
        with RunningHub(config):
            device.publish("alarm", alarm.to_payload())
            device.publish("alarm", refused)
            wait_until(lambda: "notified" in device.stages("at-rest-1"), timeout=20)
            wait_until(lambda: store.rejected())
            wait_until(lambda: _count(engine, WebhookDelivery))
    finally:
        device.close()

    # The hub works with what it sealed ...
    stored = store.find_alarm(people.device_id, "at-rest-1")
    assert stored is not None and (stored.lat, stored.lon, stored.accuracy_m) == ALARM_POSITION
    deliveries = store.deliveries(stored.id)
    assert deliveries and all(f"{lat:.5f}" in d.body for d in deliveries)
    [kept] = store.rejected()
    assert kept.payload.startswith(refused[:-1])  # kept whole (the device signed it)
    assert [(r.lat, r.lon) for r in list_responders(engine)] == [(rlat, rlon)]
    with Session(engine) as session:
        device_row = session.get(Device, people.device_id)
        assert device_row is not None and device_row.key == people.device_key
    with engine.connect() as connection:
        raw_lat = connection.execute(
            select(type_coerce(AlarmRow.lat, Text)).where(AlarmRow.id == stored.id)  # type: ignore[arg-type]
        ).scalar_one()
    assert key_id_of(raw_lat) == file_keys.current
    # ... and the database itself holds none of it in clear.
    raw = _raw_sqlite(database_url) if database_url.startswith("sqlite") else _raw_postgres(engine)
    assert b"Natalia Test" in raw and b"sister@example.org" in raw  # the scan sees the data
    leaks = [n for n in _needles(ALARM_POSITION, RESPONDER_POSITION) if n in raw]
    assert leaks == []
    assert people.device_key.encode() not in raw and hook_secret.encode() not in raw
    engine.dispose()
