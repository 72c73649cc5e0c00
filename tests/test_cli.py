"""The ``natalia`` command as an operator uses it: init, register, list; clear one-line errors."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from broker import PasswordFile
from hub.cli import main


def natalia(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path, capsys) -> Path:
    code, out, _ = natalia(capsys, "init", str(tmp_path / "site"), "--port", "18830")
    assert code == 0 and "hub.toml" in out
    return tmp_path / "site" / "hub.toml"


def test_init_writes_a_private_config_with_the_hub_account(config: Path) -> None:
    text = config.read_text()
    password = re.search(r'password = "([^"]+)"', text)
    assert password is not None
    assert PasswordFile(config.parent / "broker" / "passwd").check("natalia-hub", password[1])
    assert config.stat().st_mode & 0o077 == 0
    assert "listener 18830 127.0.0.1" in (config.parent / "broker" / "mosquitto.conf").read_text()


def test_init_refuses_to_overwrite(config: Path, capsys) -> None:
    code, _, err = natalia(capsys, "init", str(config.parent))
    assert code == 2 and "exists" in err


def test_register_defender_device_and_contacts(config: Path, capsys) -> None:
    c = ("-c", str(config))
    assert (
        natalia(capsys, "defender", "add", "Natalia E.", "--timezone", "Europe/Moscow", *c)[1]
        == "defender 1: Natalia E.\n"
    )
    code, out, _ = natalia(capsys, "device", "add", "wb-7", "--defender", "1", *c)
    password = re.search(r"shown once\): (\S+)", out)
    assert code == 0 and password is not None
    assert PasswordFile(config.parent / "broker" / "passwd").check("wb-7", password[1])
    assert natalia(capsys, "contact", "add", "HQ", "console://", "--hq", *c)[0] == 0
    code, _, _ = natalia(
        capsys, "contact", "add", "Sister", "tgram://123456:ABCDEFsecret/987", "--defender", "1", *c
    )
    assert code == 0
    _, listing, _ = natalia(capsys, "contact", "list", *c)
    assert "HQ\tHQ\tconsole://" in listing
    assert "ABCDEFsecret" not in listing
    assert "wb-7\tdefender 1\tactive" in natalia(capsys, "device", "list", *c)[1]


def test_deactivating_a_contact_cancels_what_waits_for_it_and_shows_in_the_list(
    config: Path, capsys
) -> None:
    from sqlmodel import Session

    from hub.config import load_config
    from hub.db import engine_for
    from hub.models import Delivery

    c = ("-c", str(config))
    natalia(capsys, "defender", "add", "Natalia E.", *c)
    natalia(capsys, "contact", "add", "Sister", "console://", "--defender", "1", *c)
    engine = engine_for(load_config(config))
    with Session(engine) as session:  # a message waiting for a retry on her channel
        waiting = Delivery(
            key="k",
            contact_id=1,
            recipient="Sister",
            channel_url="console://",
            channel_masked="console://",
            title="t",
            body="b",
            short="s",
            status="retrying",
        )
        session.add(waiting)
        session.commit()

    code, out, _ = natalia(capsys, "contact", "deactivate", "1", "--by", "duty officer", *c)

    assert code == 0
    assert out == "contact 1 (Sister): deactivated\n1 queued message(s) to it cancelled\n"
    assert natalia(capsys, "contact", "list", *c)[1].rstrip().endswith("\tdeactivated")
    with Session(engine) as session:
        row = session.get(Delivery, 1)
        assert row is not None and row.status == "cancelled"
        assert row.detail == "cancelled: the contact was deactivated by duty officer"
    assert natalia(capsys, "contact", "activate", "1", "--by", "duty officer", *c)[0] == 0
    assert "deactivated" not in natalia(capsys, "contact", "list", *c)[1]
    code, _, err = natalia(capsys, "contact", "deactivate", "9", "--by", "x", *c)
    assert code == 2 and "no contact with id 9" in err
    engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("device", "add", "wb+1", "--defender", "1"), "invalid device id"),
        (("device", "add", "wb-1", "--defender", "99"), "no defender with id 99"),
        (("contact", "add", "X", "nosuch://x", "--hq"), "no notifier plugin handles nosuch://"),
        (("contact", "add", "X", "not a url", "--hq"), "must look like scheme://"),
        (("defender", "add", "X", "--timezone", "Nowhere/City"), "unknown time zone"),
        (("alarms", "show", "A42"), "no alarm A42"),
    ],
)
def test_mistakes_get_one_clear_line(config: Path, capsys, args, message: str) -> None:
    code, _, err = natalia(capsys, *args, "-c", str(config))
    assert code == 2
    assert message in err and "Traceback" not in err


def test_missing_config_says_how_to_create_one(tmp_path: Path, capsys) -> None:
    code, _, err = natalia(capsys, "device", "list", "-c", str(tmp_path / "nope.toml"))
    assert code == 2 and "natalia init" in err


def test_demo_runs_the_alarm_path_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"demo: OK alarm A1 deliveries 3/3 ok, end-to-end \d+\.\d{3} s from trigger to last "
        r"delivery",
        summary,
    ), summary
    port = int(re.search(r"broker on port (\d+)", result.stdout)[1])  # type: ignore[index]
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the demo's broker is still running"
    assert "59.32932" not in result.stderr, "a coordinate reached the log"
