"""Responders in the database: registration, availability, positions and who is nearby.

Each test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker import HUB_USER, PasswordFile
from hub.admin import add_defender
from hub.db import make_engine
from hub.models import Device, Responder
from hub.owntracks import OwnTracksLocation, parse_owntracks
from hub.responders import (
    ResponderError,
    add_responder,
    add_responder_with_account,
    find_nearby,
    forget_positions,
    list_responders,
    record_position,
    record_position_by_id,
    set_availability,
)

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
AT_T0 = datetime.fromtimestamp(T0, UTC)
STOCKHOLM = (59.3326, 18.0649)  # Sergels torg
# About 1.1 km north of it, and about 11 km north.
NEAR = (59.3426, 18.0649)
FAR = (59.4326, 18.0649)


@pytest.fixture
def engine(database_url: str) -> Engine:
    return make_engine(database_url)


def fix(user: str, tst: int, lat: float, lon: float, acc: float | None = 10) -> OwnTracksLocation:
    """A location exactly as the app would publish it, parsed like the hub does."""
    message: dict[str, object] = {"_type": "location", "lat": lat, "lon": lon, "tst": tst}
    if acc is not None:
        message["acc"] = acc
    parsed = parse_owntracks(f"owntracks/{user}/phone", json.dumps(message).encode())
    assert parsed is not None
    return parsed


def stored(engine: Engine, responder_id: int | None) -> Responder:
    with Session(engine) as session:
        row = session.get(Responder, responder_id)
        assert row is not None
        return row


def test_added_responder_is_available_without_a_position(engine: Engine) -> None:
    added = add_responder(
        engine,
        "Ana",
        "mailto://ana@example.org",
        2500,
        mqtt_user="ana",
        language="ru",
        fallback_urls=("json://127.0.0.1:9/ana", "console://"),
        receives_tests=True,
    )
    row = stored(engine, added.id)
    assert (row.name, row.channel_url, row.radius_m, row.mqtt_user, row.language) == (
        "Ana", "mailto://ana@example.org", 2500, "ana", "ru",
    )  # fmt: skip
    assert row.fallback_urls == ["json://127.0.0.1:9/ana", "console://"]
    assert row.available and row.receives_tests
    assert (row.lat, row.lon, row.accuracy_m, row.position_at) == (None, None, None, None)


def test_responder_without_username_is_allowed_and_usernames_stay_unique(engine: Engine) -> None:
    first = add_responder(engine, "Ana", "console://", 1000)
    second = add_responder(engine, "Boris", "console://", 1000)
    assert first.mqtt_user is None and second.mqtt_user is None
    add_responder(engine, "Chen", "console://", 1000, mqtt_user="chen")
    with pytest.raises(ResponderError, match="already uses username 'chen'"):
        add_responder(engine, "Chen again", "console://", 1000, mqtt_user="chen")
    assert [r.name for r in list_responders(engine)] == ["Ana", "Boris", "Chen"]


def test_username_of_a_wristband_or_the_hub_is_refused(engine: Engine) -> None:
    defender = add_defender(engine, "Natalia")
    assert defender.id is not None
    with Session(engine) as session:
        session.add(Device(id="wb-1", defender_id=defender.id))
        session.commit()
    with pytest.raises(ResponderError, match="wristband"):
        add_responder(engine, "Ana", "console://", 1000, mqtt_user="wb-1")
    with pytest.raises(ResponderError, match="the hub's own broker account"):
        add_responder(engine, "Ana", "console://", 1000, mqtt_user=HUB_USER)
    assert list_responders(engine) == []


@pytest.mark.parametrize(
    ("name", "radius_m", "mqtt_user", "reason"),
    [
        ("Ana", 1000, "ana/phone", "invalid username"),
        ("Ana", 1000, "ana+", "invalid username"),
        ("Ana", 1000, "", "invalid username"),
        ("Ana", 0, None, "radius must be a positive number"),
        ("Ana", -5, None, "radius must be a positive number"),
        ("Ana", float("nan"), None, "radius must be a positive number"),
        ("  ", 1000, None, "needs a name"),
    ],
)
def test_invalid_registration_is_refused(
    engine: Engine, name: str, radius_m: float, mqtt_user: str | None, reason: str
) -> None:
    with pytest.raises(ResponderError, match=reason):
        add_responder(engine, name, "console://", radius_m, mqtt_user=mqtt_user)
    assert list_responders(engine) == []


def test_availability_can_be_switched_off_and_on(engine: Engine) -> None:
    added = add_responder(engine, "Ana", "console://", 1000)
    assert added.id is not None
    assert set_availability(engine, added.id, False).available is False
    assert stored(engine, added.id).available is False
    assert set_availability(engine, added.id, True).available is True
    assert stored(engine, added.id).available is True
    with pytest.raises(ResponderError, match="no responder with id 999"):
        set_availability(engine, 999, False)


def test_owntracks_position_is_stored_for_its_user(engine: Engine) -> None:
    added = add_responder(engine, "Ana", "console://", 1000, mqtt_user="ana")
    other = add_responder(engine, "Boris", "console://", 1000, mqtt_user="boris")
    updated = record_position(engine, "ana", fix("ana", T0, *NEAR, acc=12.5))
    assert updated is not None and updated.id == added.id
    row = stored(engine, added.id)
    assert (row.lat, row.lon, row.accuracy_m) == (*NEAR, 12.5)
    assert row.position_at == AT_T0
    assert updated.position_at == AT_T0
    assert stored(engine, other.id).position_at is None


def test_position_of_an_unknown_user_is_not_stored(engine: Engine) -> None:
    add_responder(engine, "Ana", "console://", 1000, mqtt_user="ana")
    assert record_position(engine, "mallory", fix("mallory", T0, *NEAR)) is None
    assert [r.position_at for r in list_responders(engine)] == [None]


def test_older_position_arriving_late_is_ignored(engine: Engine) -> None:
    added = add_responder(engine, "Ana", "console://", 1000, mqtt_user="ana")
    record_position(engine, "ana", fix("ana", T0 + 60, *NEAR, acc=5))
    late = record_position(engine, "ana", fix("ana", T0, *FAR, acc=50))
    same_second = record_position(engine, "ana", fix("ana", T0 + 60, *STOCKHOLM, acc=7))
    row = stored(engine, added.id)
    assert (row.lat, row.lon, row.accuracy_m) == (*NEAR, 5)
    assert row.position_at == AT_T0 + timedelta(seconds=60)
    assert late is not None and late.lat == NEAR[0]
    assert same_second is not None and same_second.lat == NEAR[0]
    record_position(engine, "ana", fix("ana", T0 + 61, *FAR, acc=None))
    row = stored(engine, added.id)
    assert (row.lat, row.lon, row.accuracy_m) == (*FAR, None)


def test_fix_time_in_the_future_is_taken_as_the_receipt_time(engine: Engine) -> None:
    added = add_responder(engine, "Ana", "console://", 1000, mqtt_user="ana")
    received = AT_T0
    record_position(engine, "ana", fix("ana", T0 + 86_400, *FAR), now=received)
    assert stored(engine, added.id).position_at == received
    # The phone's clock is fixed: its next, correct fix is not blocked by the wrong one.
    record_position(engine, "ana", fix("ana", T0 + 30, *NEAR), now=received + timedelta(minutes=1))
    row = stored(engine, added.id)
    assert (row.lat, row.position_at) == (NEAR[0], AT_T0 + timedelta(seconds=30))


def test_location_of_another_user_cannot_be_recorded_for_this_one(engine: Engine) -> None:
    add_responder(engine, "Ana", "console://", 1000, mqtt_user="ana")
    with pytest.raises(ValueError, match="another user"):
        record_position(engine, "ana", fix("boris", T0, *NEAR))


def test_position_by_id_follows_the_same_rules(engine: Engine) -> None:
    added = add_responder(engine, "Ana", "console://", 1000)
    assert added.id is not None
    updated = record_position_by_id(engine, added.id, *NEAR, 8.0, AT_T0)
    assert updated is not None and updated.position_at == AT_T0
    record_position_by_id(engine, added.id, *FAR, 3.0, AT_T0 - timedelta(seconds=1))
    assert stored(engine, added.id).lat == NEAR[0]
    assert record_position_by_id(engine, 999, *NEAR, 8.0, AT_T0) is None
    with pytest.raises(ValueError, match="latitude"):
        record_position_by_id(engine, added.id, 95.0, 0.0, None, AT_T0)
    with pytest.raises(ValueError, match="accuracy"):
        record_position_by_id(engine, added.id, *NEAR, -1.0, AT_T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        record_position_by_id(engine, added.id, *NEAR, None, AT_T0.replace(tzinfo=None))


def test_find_nearby_returns_available_fresh_responders_in_their_radius(engine: Engine) -> None:
    now = AT_T0 + timedelta(minutes=10)
    people = {
        "near": (NEAR, 5000, True, T0),
        "far-willing": (FAR, 20_000, True, T0),
        "far-unwilling": (FAR, 5000, True, T0),
        "off-call": (NEAR, 5000, False, T0),
        "stale": (NEAR, 5000, True, T0 - 3600),
        "at-alarm": (STOCKHOLM, 100, True, T0),
    }
    ids = {}
    for user, (where, radius, available, tst) in people.items():
        added = add_responder(engine, user, "console://", radius, mqtt_user=user)
        assert added.id is not None
        ids[user] = added.id
        record_position(engine, user, fix(user, tst, *where), now=now)
        if not available:
            set_availability(engine, added.id, False)
    add_responder(engine, "no-position", "console://", 50_000, mqtt_user="no-position")

    found = find_nearby(engine, *STOCKHOLM, now, timedelta(minutes=30))
    assert [(r.name, round(d, -2)) for r, d in found] == [
        ("at-alarm", 0),
        ("near", 1100),
        ("far-willing", 11100),
    ]
    assert found[0][0].id == ids["at-alarm"]
    assert find_nearby(engine, *STOCKHOLM, now, timedelta(hours=2))[2][0].name == "stale"


def test_forget_positions_erases_only_old_ones(engine: Engine) -> None:
    old = add_responder(engine, "old", "console://", 1000, mqtt_user="old")
    new = add_responder(engine, "new", "console://", 1000, mqtt_user="new")
    record_position(engine, "old", fix("old", T0, *NEAR))
    record_position(engine, "new", fix("new", T0 + 7200, *NEAR))
    assert forget_positions(engine, AT_T0 + timedelta(hours=1)) == 1
    erased = stored(engine, old.id)
    assert (erased.lat, erased.lon, erased.accuracy_m, erased.position_at) == (None,) * 4
    assert stored(engine, new.id).lat == NEAR[0]


def test_account_is_created_with_the_responder(engine: Engine, tmp_path: Path) -> None:
    creds = add_responder_with_account(
        engine, "Ana", "console://", 1000, "ana", tmp_path, password="s3cret-pw"
    )
    assert PasswordFile(tmp_path / "passwd").check("ana", "s3cret-pw")
    assert creds.password == "s3cret-pw"
    assert creds.broker_reloaded is False  # no broker runs on tmp_path
    assert stored(engine, creds.responder.id).mqtt_user == "ana"
    generated = add_responder_with_account(engine, "Boris", "console://", 1000, "boris", tmp_path)
    assert len(generated.password) >= 24
    assert PasswordFile(tmp_path / "passwd").check("boris", generated.password)


def test_existing_broker_account_is_never_overwritten(engine: Engine, tmp_path: Path) -> None:
    accounts = PasswordFile(tmp_path / "passwd")
    accounts.set("wb-9", "the-wristbands-password")
    with pytest.raises(ResponderError, match="already has an account 'wb-9'"):
        add_responder_with_account(engine, "Ana", "console://", 1000, "wb-9", tmp_path)
    assert accounts.check("wb-9", "the-wristbands-password")
    assert list_responders(engine) == []


def test_account_needs_the_broker_data_dir(engine: Engine) -> None:
    with pytest.raises(ResponderError, match="no \\[broker\\] data_dir"):
        add_responder_with_account(engine, "Ana", "console://", 1000, "ana", None)
    assert list_responders(engine) == []
