"""``natalia keys``: rotation re-seals every value under a new key and drops the old one, on
SQLite and PostgreSQL; a running hub keeps working through it (hub/commands_keys.py)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Text, literal, select, type_coerce, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hub.cli import main
from hub.commands_keys import CLEAR, count_by_key, sealed_columns
from hub.db import make_engine
from hub.models import ERASED, Alarm, Defender, Delivery, Device, RejectedMessage, Responder
from hub.sealing import KEYS_ENV, Keyring, SealError, key_id_of, parse_entries, write_key_file
from hub.webhooks.tables import WebhookDelivery, WebhookSubscription
from tests.support.device import RawDevice, make_alarm
from tests.support.hubs import RunningHub, hub_config
from tests.support.population import populate_on_broker
from tests.support.receivers import wait_until

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
DEVICE_KEY = "ab" * 32
BODY = "Position: -33.86785, 151.20732 https://www.openstreetmap.org/?mlat=-33.86785"


def _config(tmp_path: Path, database_url: str) -> Path:
    """A hub.toml whose keys are in ``position.keys`` next to it (K1 only)."""
    write_key_file(tmp_path / "position.keys", Keyring.generate(), replace=False)
    path = tmp_path / "hub.toml"
    path.write_text(
        f"[database]\nurl = {json.dumps(database_url)}\n\n"
        '[storage]\nposition_keys_file = "position.keys"\n'
    )
    return path


def _populate(engine: Engine) -> None:
    """One value in every sealed column, and an erased message (kept in clear)."""
    with Session(engine) as session:
        defender = Defender(name="Ana")
        session.add(defender)
        session.flush()
        assert defender.id is not None
        session.add(Device(id="wb-rot", defender_id=defender.id, key=DEVICE_KEY))
        session.flush()
        alarm = Alarm(
            device_id="wb-rot",
            defender_id=defender.id,
            alarm_id="a-1",
            kind="panic",
            device_ts=NOW,
            seq=1,
            lat=-33.86785,
            lon=151.20732,
            accuracy_m=11.5,
        )
        session.add(alarm)
        session.flush()
        for n, body in enumerate((BODY, BODY, ERASED)):
            session.add(
                Delivery(
                    key=f"k-{n}",
                    alarm_pk=alarm.id,
                    recipient="Sister",
                    channel_url="console://",
                    channel_masked="console://",
                    title="ALARM",
                    body=body,
                    short=body,
                )
            )
        session.add(
            RejectedMessage(topic="t", reason="bad", payload=BODY.encode(), payload_size=len(BODY))
        )
        session.add(Responder(name="R", channel_url="console://", lat=-33.87, lon=151.2))
        hook = WebhookSubscription(url="http://127.0.0.1:9/", secret="s")
        session.add(hook)
        session.flush()
        assert hook.id is not None
        session.add(WebhookDelivery(webhook_id=hook.id, event_id="e", event_type="t", body=BODY))
        session.commit()


#: Sealed values _populate writes: 3 alarm, 1 device key, 2+2 messages, 1 payload,
#: 2 responder (no accuracy), 1 webhook secret, 1 webhook body.
SEALED = 13


def _snapshot(engine: Engine) -> dict[str, object]:
    """Everything sealed, as the ORM reads it."""
    with Session(engine) as session:
        alarm = session.exec(select(Alarm)).scalar_one()  # type: ignore[call-overload]
        device = session.get(Device, "wb-rot")
        assert device is not None
        return {
            "alarm": (alarm.lat, alarm.lon, alarm.accuracy_m),
            "device": device.key,
            "bodies": sorted((d.body, d.short) for d in session.exec(select(Delivery)).scalars()),  # type: ignore[call-overload]
            "payload": session.exec(select(RejectedMessage)).scalar_one().payload,  # type: ignore[call-overload]
            "responder": [
                (r.lat, r.lon)
                for r in session.exec(select(Responder)).scalars()  # type: ignore[call-overload]
            ],
            "webhook": session.exec(select(WebhookDelivery)).scalar_one().body,  # type: ignore[call-overload]
        }


def _raw_key_ids(engine: Engine) -> Counter[str | None]:
    """The key id every stored sealed value names (None: stored in clear)."""
    ids: Counter[str | None] = Counter()
    with engine.connect() as connection:
        for sealed in sealed_columns():
            raw = type_coerce(sealed.column, Text)
            for (value,) in connection.execute(select(raw).where(raw.is_not(None))):
                ids[key_id_of(value)] += 1
    return ids


@pytest.fixture
def sqlite_site(tmp_path: Path) -> tuple[str, Path]:
    """A SQLite database URL and its hub.toml (keys in the key file next to it)."""
    url = f"sqlite:///{tmp_path / 'natalia.db'}"
    return url, _config(tmp_path, url)


@pytest.fixture
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV)


def test_rotation_reseals_every_value_and_drops_the_old_key(
    database_url, tmp_path, capsys, no_env_keys
) -> None:
    config = _config(tmp_path, database_url)
    keys_file = tmp_path / "position.keys"
    running = Keyring.from_file(keys_file)  # what a running hub holds
    [old] = running.key_ids
    engine = make_engine(database_url, running)
    _populate(engine)
    before = _snapshot(engine)
    assert _raw_key_ids(engine) == Counter({old: SEALED, None: 2})  # the erased marker, twice

    assert main(["keys", "rotate", "-c", str(config), "--batch", "2"]) == 0
    out = capsys.readouterr().out
    [new] = parse_entries(keys_file.read_text(), "keys")  # the old key is gone from the file
    assert new != old and keys_file.stat().st_mode & 0o777 == 0o600
    assert f"re-sealed {SEALED} values with key {new}" in out and f"removed from {keys_file}" in out
    assert _raw_key_ids(engine) == Counter({new: SEALED, None: 2})
    assert count_by_key(engine) == Counter({new: SEALED, CLEAR: 2})

    restarted = make_engine(database_url, Keyring.from_file(keys_file))
    assert _snapshot(restarted) == before
    # The running hub reads what was re-sealed and seals what it writes with the new key.
    assert _snapshot(engine) == before
    assert running.current == new
    old_only = Keyring({old: b"\0" * 32})
    with pytest.raises(SealError, match=f"sealed with key {new}, which is not in the keyring"):
        old_only.open(running.seal(b"x", "alarm.lat"), "alarm.lat")
    for made in (engine, restarted):
        made.dispose()


def test_keep_old_then_reseal_catches_a_late_value_and_drops_the_key(
    sqlite_site, tmp_path, capsys, no_env_keys
) -> None:
    url, config = sqlite_site
    keys_file = tmp_path / "position.keys"
    [old] = Keyring.from_file(keys_file).key_ids
    stale = Keyring({old: parse_entries(keys_file.read_text(), "keys")[old]})  # no key file
    engine = make_engine(url, stale)
    _populate(engine)

    assert main(["keys", "rotate", "-c", str(config), "--keep-old"]) == 0
    keys = list(parse_entries(keys_file.read_text(), "keys"))
    assert keys[0] == old and len(keys) == 2
    new = keys[1]
    assert f"no longer used, can be removed from the key file: {old}" in capsys.readouterr().out
    # A hub that never saw the new key file writes one more value with the old key.
    with Session(engine) as session:
        session.add(RejectedMessage(topic="late", reason="r", payload=b"late", payload_size=4))
        session.commit()
    assert main(["keys", "status", "-c", str(config)]) == 0
    status = capsys.readouterr().out
    assert f"{old}\t1 values" in status and f"{new} (current)\t{SEALED} values" in status

    assert main(["keys", "reseal", "-c", str(config)]) == 0
    assert "re-sealed 1 values" in capsys.readouterr().out
    assert list(parse_entries(keys_file.read_text(), "keys")) == [new]
    assert count_by_key(engine)[new] == SEALED + 1
    engine.dispose()


def test_keys_from_the_environment_are_resealed_but_not_rewritten(
    sqlite_site, capsys, monkeypatch
) -> None:
    url, config = sqlite_site
    first = Keyring.generate()
    monkeypatch.setenv(KEYS_ENV, first.entries().strip())
    engine = make_engine(url)
    _populate(engine)
    assert main(["keys", "rotate", "-c", str(config)]) == 2
    assert f"the keys come from {KEYS_ENV}" in capsys.readouterr().err

    assert main(["keys", "generate"]) == 0
    entry = capsys.readouterr().out.strip()
    [added] = parse_entries(entry, "printed")
    monkeypatch.setenv(KEYS_ENV, f"{first.entries().strip()},{entry}")
    assert main(["keys", "reseal", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"re-sealed {SEALED} values with key {added}" in out
    assert f"can be removed from {KEYS_ENV}: {first.current}" in out
    assert _raw_key_ids(engine) == Counter({added: SEALED, None: 2})
    engine.dispose()


def test_keys_init_creates_the_file_once(sqlite_site, tmp_path, capsys, no_env_keys) -> None:
    _, config = sqlite_site
    (tmp_path / "position.keys").unlink()
    assert main(["hub", "run", "-c", str(config)]) == 2
    assert "natalia keys init" in capsys.readouterr().err
    assert main(["keys", "init", "-c", str(config)]) == 0
    assert (tmp_path / "position.keys").stat().st_mode & 0o777 == 0o600
    assert main(["keys", "init", "-c", str(config)]) == 2  # never overwrites a key


def test_a_running_hub_keeps_working_through_a_rotation(
    sqlite_site, broker, smtp_server, tmp_path, capsys, no_env_keys
) -> None:
    url, config_path = sqlite_site
    keys_file = tmp_path / "position.keys"
    engine = make_engine(url, Keyring.from_file(keys_file))
    people = populate_on_broker(engine, broker, {"Sister": smtp_server.url("sister@example.org")})
    config = hub_config(broker, url)
    config.storage.position_keys_file = keys_file
    device = RawDevice(
        broker.host, broker.port, people.device_id, people.device_password, people.device_key
    )
    try:
        with RunningHub(config):
            device.publish("alarm", make_alarm("before", seq=1).to_payload())
            wait_until(lambda: "notified" in device.stages("before"))
            assert main(["keys", "rotate", "-c", str(config_path)]) == 0
            device.publish("alarm", make_alarm("after", seq=2).to_payload())
            wait_until(lambda: "notified" in device.stages("after"))
            wait_until(lambda: len(smtp_server.messages) == 2)
    finally:
        device.close()
    [new] = parse_entries(keys_file.read_text(), "keys")
    assert set(_raw_key_ids(engine)) <= {new, None}
    restarted = make_engine(url, Keyring.from_file(keys_file))
    with Session(restarted) as session:
        alarms = session.exec(select(Alarm)).scalars().all()  # type: ignore[call-overload]
        assert sorted((a.alarm_id, a.lat) for a in alarms) == [
            ("after", 43.3178),
            ("before", 43.3178),
        ]
    assert all("43.31780" in m.text for m in smtp_server.messages)
    for made in (engine, restarted):
        made.dispose()


def test_a_tampered_value_is_detected_and_stops_the_rotation(
    sqlite_site, tmp_path, capsys, no_env_keys
) -> None:
    url, config = sqlite_site
    keyring = Keyring.from_file(tmp_path / "position.keys")
    engine = make_engine(url, keyring)
    _populate(engine)
    raw = type_coerce(Alarm.lat, Text)
    with engine.begin() as connection:
        sealed = connection.execute(select(raw)).scalar_one()
        head, body = sealed.rsplit(":", 1)
        forged = f"{head}:{body[:-6]}{'AAAA' if body[-6:-2] != 'AAAA' else 'BBBB'}{body[-2:]}"
        connection.execute(update(Alarm).values({"lat": literal(forged, Text)}))
    with Session(engine) as session, pytest.raises(SealError, match="integrity check"):
        session.exec(select(Alarm)).scalar_one()  # type: ignore[call-overload]

    assert main(["keys", "rotate", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "alarm.lat value sealed with key" in err and "failed its integrity check" in err
    assert "no key was removed" in err and forged not in err
    assert len(parse_entries((tmp_path / "position.keys").read_text(), "keys")) == 2
    engine.dispose()
