"""``console://`` — print each notification as a readable block, for the demo and for tests.

The shortest complete notifier: it shows everything a plugin needs (a name, its schemes, URL
validation, an ``async send`` that reports a :class:`DeliveryResult`) and nothing else. It prints
the whole message, coordinates included, to the hub's terminal: a channel for demos, never for a
production contact.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import urlsplit

from hub.plugin_api import (
    BaseNotifier,
    DeliveryResult,
    InvalidChannelURL,
    Notification,
    Notifier,
    hookimpl,
)

CONSOLE_SCHEMES = ("console",)
#: ``console://`` and ``console://stdout`` print to standard output, ``console://stderr`` to
#: standard error.
TARGETS = ("stdout", "stderr")


def console_target(url: str) -> str:
    """``stdout`` or ``stderr`` for a ``console://`` URL; :class:`InvalidChannelURL` otherwise."""
    parts = urlsplit(url)
    target = (parts.netloc + parts.path).strip("/").lower() or "stdout"
    if target not in TARGETS:
        raise InvalidChannelURL(
            f"console:// can print to stdout or stderr, not {target!r}: "
            "use console://, console://stdout or console://stderr"
        )
    return target


def render(notification: Notification) -> str:
    """One block per notification: who it is for, what it says, which alarm it belongs to."""
    test = " [TEST]" if notification.is_test else ""
    header = (
        f"=== Natalia notification {notification.delivery_id} "
        f"(alarm {notification.alarm_ref}){test} ==="
    )
    return "\n".join(
        [
            header,
            f"To:    {notification.recipient} ({notification.language})",
            f"Title: {notification.title}",
            "",
            notification.body,
            "=" * len(header),
            "",
        ]
    )


class ConsoleNotifier(BaseNotifier):
    """Prints notifications to the hub's own terminal."""

    name = "console"
    scheme_names = CONSOLE_SCHEMES

    def validate(self, url: str) -> None:
        super().validate(url)
        console_target(url)

    async def send(self, notification: Notification) -> DeliveryResult:
        try:
            target = console_target(notification.url)
        except InvalidChannelURL as exc:
            return DeliveryResult.failure(str(exc), permanent=True)
        # Looked up at send time, not import time, so redirected streams (pytest, the demo's
        # log capture) receive the output.
        stream: TextIO = sys.stderr if target == "stderr" else sys.stdout
        stream.write(render(notification))
        stream.flush()
        return DeliveryResult.success(f"printed to {target}")


@hookimpl
def natalia_notifiers(settings: Mapping[str, Any]) -> Iterable[Notifier]:
    """The console notifier; it has no settings."""
    return [ConsoleNotifier()]
