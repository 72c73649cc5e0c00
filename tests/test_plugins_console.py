"""The console notifier: the demo's channel."""

from __future__ import annotations

import asyncio

import pytest

from hub.plugin_api import InvalidChannelURL
from plugins.console import ConsoleNotifier, natalia_notifiers
from plugins.testing import check_notifier, make_notification


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


def test_console_stderr_prints_to_standard_error(capsys):
    result = asyncio.run(check_notifier(ConsoleNotifier(), "console://stderr"))

    out, err = capsys.readouterr()
    assert result.ok and out == "" and "Natalia notification" in err


@pytest.mark.parametrize("url", ["console://printer", "console://stdout/extra"])
def test_an_unknown_console_target_is_refused(url):
    with pytest.raises(InvalidChannelURL, match="stdout or stderr"):
        ConsoleNotifier().validate(url)


def test_the_hook_provides_the_console_notifier_for_console_urls():
    (notifier,) = natalia_notifiers(settings={})

    assert notifier.name == "console" and list(notifier.schemes) == ["console"]
