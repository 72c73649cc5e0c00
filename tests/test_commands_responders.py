"""``natalia responder ...`` as an operator uses it; coordinates are never printed."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker import PasswordFile
from hub.commands import USER_ERRORS
from hub.commands_responders import add_responder_commands, position_age
from hub.config import load_config
from hub.db import make_engine
from hub.owntracks import parse_owntracks
from hub.responders import record_position
from hub.setup import init_directory


def natalia(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    """Run one sub-command the way ``hub.cli.main`` does once the group is wired in."""
    parser = argparse.ArgumentParser(prog="natalia")
    groups = parser.add_subparsers(dest="group", required=True)
    add_responder_commands(groups, lambda sub: sub.add_argument("--config", "-c"))
    args = parser.parse_args([*argv, "-c", str(config)])
    args.config_path = Path(args.config)
    try:
        code = int(args.func(args))
    except USER_ERRORS as exc:
        print(f"natalia: {exc}", file=sys.stderr)
        code = 2
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return init_directory(tmp_path / "site", port=18831)


def test_add_with_username_creates_the_broker_account_once(config: Path, capsys) -> None:
    code, out, _ = natalia(
        capsys, config, "responder", "add", "Ana", "mailto://ana@example.org",
        "--radius-m", "2500", "--mqtt-user", "ana", "--fallback", "console://", "--tests",
    )  # fmt: skip
    assert code == 0
    password = re.search(r"password \(shown once\): (\S+)", out)
    assert password is not None
    assert PasswordFile(config.parent / "broker" / "passwd").check("ana", password[1])
    assert "responder 1: Ana" in out and "OwnTracks app: mode MQTT, username ana" in out
    code, _, err = natalia(capsys, config, "responder", "add", "Ana 2", "console://",
                           "--mqtt-user", "ana")  # fmt: skip
    assert code == 2 and "already uses username 'ana'" in err


def test_add_without_username_needs_no_broker(config: Path, capsys) -> None:
    code, out, _ = natalia(capsys, config, "responder", "add", "Boris", "console://")
    assert code == 0 and out == "responder 1: Boris (no position source)\n"
    assert "Boris" not in PasswordFile(config.parent / "broker" / "passwd").usernames()


def test_add_refuses_a_channel_no_plugin_handles(config: Path, capsys) -> None:
    code, _, err = natalia(
        capsys, config, "responder", "add", "Ana", "console://", "--fallback", "nope://x"
    )
    assert code == 2 and "no notifier plugin handles nope://" in err


def test_add_refuses_the_hubs_account(config: Path, capsys) -> None:
    code, _, err = natalia(
        capsys, config, "responder", "add", "Hub", "console://", "--mqtt-user", "natalia-hub"
    )
    assert code == 2 and "hub's own broker account" in err


def test_list_shows_position_age_never_coordinates(config: Path, capsys) -> None:
    natalia(capsys, config, "responder", "add", "Ana", "tgram://123456:ABCDEFsecret/987",
            "--mqtt-user", "ana")  # fmt: skip
    natalia(capsys, config, "responder", "add", "Boris", "console://")
    engine = make_engine(load_config(config).database.url)
    tst = int((datetime.now(UTC) - timedelta(minutes=7, seconds=5)).timestamp())
    payload = f'{{"_type":"location","lat":59.332611,"lon":18.064922,"acc":9,"tst":{tst}}}'
    location = parse_owntracks("owntracks/ana/phone", payload.encode())
    assert location is not None
    record_position(engine, "ana", location)

    code, out, _ = natalia(capsys, config, "responder", "list")
    assert code == 0
    ana, boris = out.splitlines()
    assert ana.startswith("1\tAna\ton call\t5000 m\tuser ana\tposition 7 min ago\t")
    assert boris.startswith("2\tBoris\ton call\t5000 m\tuser -\tno position\t")
    assert "59.33" not in out and "18.06" not in out
    assert "ABCDEFsecret" not in out


def test_available_switches_a_responder_off_and_on(config: Path, capsys) -> None:
    natalia(capsys, config, "responder", "add", "Ana", "console://")
    assert natalia(capsys, config, "responder", "available", "1", "--off")[1] == (
        "responder 1: Ana is off call\n"
    )
    assert "\toff\t" in natalia(capsys, config, "responder", "list")[1]
    assert natalia(capsys, config, "responder", "available", "1", "--on")[1] == (
        "responder 1: Ana is on call\n"
    )
    code, _, err = natalia(capsys, config, "responder", "available", "9", "--on")
    assert code == 2 and "no responder with id 9" in err


def test_available_needs_on_or_off(config: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        natalia(capsys, config, "responder", "available", "1")


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (timedelta(seconds=-30), "position just now"),
        (timedelta(seconds=42), "position 42 s ago"),
        (timedelta(minutes=59, seconds=59), "position 59 min ago"),
        (timedelta(hours=5), "position 5 h ago"),
        (timedelta(days=3, hours=1), "position 3 days ago"),
    ],
)
def test_position_age_reads_like_a_person_would_say_it(age: timedelta, shown: str) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert position_age(now - age, now) == shown
    assert position_age(None, now) == "no position"
