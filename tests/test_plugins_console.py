"""The console notifier: the demo's channel, which never writes into the hub's log."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from broker.launcher import BrokerProcess, free_port
from devicekit.protocol import AlarmKind, Position, utcnow
from devicekit.wristband import Wristband
from hub import admin
from hub.config import load_config
from hub.db import engine_for
from hub.demo import start_hub_process, stop_process
from hub.models import Delivery
from hub.plugin_api import InvalidChannelURL, PluginError
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.setup import broker_settings, init_directory
from plugins.console import ConsoleNotifier, natalia_notifiers
from plugins.testing import check_notifier, make_notification
from tests.support.receivers import wait_until


def test_a_notification_prints_one_block_with_recipient_title_and_body(capsys):
    note = make_notification(
        recipient="Sister",
        title="ALARM: Ana",
        body="Ana at 4.6,-74.1",
        alarm_ref="A-42",
        delivery_id=7,
    )

    result = asyncio.run(check_notifier(ConsoleNotifier(), "console://", notification=note))

    out, err = capsys.readouterr()
    assert result.ok and err == ""
    assert out.count("=== Natalia notification 7 (alarm A-42) [TEST] ===") == 1
    assert "To:    Sister (en)\n" in out
    assert "Title: ALARM: Ana\n" in out
    assert "\nAna at 4.6,-74.1\n" in out


def test_console_stderr_is_refused_it_is_the_hubs_log():
    with pytest.raises(InvalidChannelURL, match="into the hub's log"):
        ConsoleNotifier().validate("console://stderr")


@pytest.mark.parametrize("url", ["console://printer", "console://stdout/extra"])
def test_an_unknown_console_target_is_refused(url):
    with pytest.raises(InvalidChannelURL, match="prints to stdout"):
        ConsoleNotifier().validate(url)


def test_standard_output_that_the_log_also_uses_is_refused_not_printed(capsys):
    handler = logging.StreamHandler(sys.stdout)  # the log goes to standard output too
    logging.getLogger().addHandler(handler)
    try:
        note = make_notification(body="at 4.6,-74.1")
        result = asyncio.run(check_notifier(ConsoleNotifier(), "console://", notification=note))
    finally:
        logging.getLogger().removeHandler(handler)

    assert not result.ok and result.permanent and "[plugins.console] file" in result.detail
    assert "4.6,-74.1" not in capsys.readouterr().out


def test_the_console_file_setting_appends_to_a_private_file(tmp_path: Path, capsys):
    out = tmp_path / "console.out"
    (notifier,) = natalia_notifiers(settings={"console": {"file": str(out)}})
    note = make_notification(body="at 4.6,-74.1")

    for _ in range(2):
        assert asyncio.run(check_notifier(notifier, "console://", notification=note)).ok

    assert out.read_text().count("at 4.6,-74.1") == 2 and capsys.readouterr().out == ""
    assert out.stat().st_mode & 0o777 == 0o600
    with pytest.raises(PluginError, match="absolute path"):
        natalia_notifiers(settings={"console": {"file": "relative.out"}})


def test_the_hook_provides_the_console_notifier_for_console_urls():
    (notifier,) = natalia_notifiers(settings={})

    assert notifier.name == "console" and list(notifier.schemes) == ["console"]


# -- the real hub, its standard output joined to its log as under systemd ----------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Wristband]]:
    """``natalia init``, Mosquitto, one defender with a wristband and a console:// HQ contact."""
    config_path = init_directory(tmp_path / "site", port=free_port(), http_port=free_port())
    config = load_config(config_path)
    assert config.broker.data_dir is not None
    broker = BrokerProcess(broker_settings(config.broker.data_dir, config.broker.port)).start()
    engine = engine_for(config)
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    defender = admin.add_defender(engine, "Ana")
    assert defender.id is not None
    creds = admin.add_device(engine, "wb-c", defender.id, config.broker.data_dir)
    broker.reload()
    admin.add_contact(engine, registry, "HQ desk", "console://", None)
    engine.dispose()
    band = Wristband(
        "wb-c",
        creds.password,
        key=creds.key,
        host="127.0.0.1",
        port=broker.port,
        state_dir=tmp_path / "band",
    )
    try:
        yield config_path, band
    finally:
        band.stop()
        broker.stop()


def run_alarm_through_hub(config_path: Path, band: Wristband, log: Path) -> Delivery:
    """Start ``natalia hub run`` with stdout and stderr both in ``log`` (``2>&1``), raise an
    alarm, return HQ's delivery once it reached its final state."""
    with log.open("ab") as out:
        hub = start_hub_process(config_path, config_path.parent / "ready", stdout=out, stderr=out)
    engine = engine_for(load_config(config_path))
    try:
        band.start()
        band.trigger(
            AlarmKind.PANIC, Position(lat=4.61234, lon=-74.08175, accuracy_m=9, fix_ts=utcnow())
        )

        def final() -> Delivery | None:
            with Session(engine) as session:
                query = select(Delivery).where(Delivery.kind == "alarm")
                row = session.exec(query.order_by(col(Delivery.id))).first()
                return row if row is not None and row.status in ("sent", "dead") else None

        delivery: Delivery = wait_until(final, timeout=60)
        return delivery
    finally:
        stop_process(hub)
        engine.dispose()


def test_a_console_contact_never_writes_positions_or_links_into_the_hub_log(
    site: tuple[Path, Wristband], tmp_path: Path
) -> None:
    config_path, band = site
    log = tmp_path / "hub.log"

    delivery = run_alarm_through_hub(config_path, band, log)

    text = log.read_text()
    assert "4.61234" not in text and "/ack/" not in text  # no position, no live link
    assert delivery.status == "dead" and "into the hub's log" in delivery.detail  # not silent
    assert "dead letter" in text  # the log says a message failed for good, not what it said


def test_with_a_console_file_the_block_goes_there_and_not_into_the_log(
    site: tuple[Path, Wristband], tmp_path: Path
) -> None:
    config_path, band = site
    out = tmp_path / "console.out"
    config_path.write_text(config_path.read_text() + f'\n[plugins.console]\nfile = "{out}"\n')
    log = tmp_path / "hub.log"

    delivery = run_alarm_through_hub(config_path, band, log)

    assert delivery.status == "sent"
    assert "4.61234" in out.read_text() and "/ack/" in out.read_text()
    assert "4.61234" not in log.read_text() and "/ack/" not in log.read_text()
