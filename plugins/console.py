"""``console://`` — print each notification as a readable block, for the demo and for tests.

The shortest complete notifier: it shows everything a plugin needs (a name, its schemes, URL
validation, settings, an ``async send`` that reports a :class:`DeliveryResult`) and nothing
else. It prints the whole message — coordinates and live acknowledgement links included — so it
is a channel for demos, never for a production contact, and it never writes into the hub's log:

- ``console://`` (or ``console://stdout``) prints to the hub's standard output, but only while
  that is not where the hub logs: a terminal is fine (a person reads it, nothing is kept), a
  standard output joined to the log (``2>&1``, systemd's default journal set-up) is refused;
- with ``[plugins.console] file = "/absolute/path"`` it appends to that file instead (created
  readable by the hub's user only);
- ``console://stderr`` is refused: standard error is the hub's log.

A send that would land in the log fails for good with the reason, so the message goes on to
the contact's next channel or is reported to HQ as a dead letter: never silently lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from hub.plugin_api import (
    BaseNotifier,
    DeliveryResult,
    InvalidChannelURL,
    Notification,
    Notifier,
    PluginError,
    hookimpl,
    settings_table,
)

CONSOLE_SCHEMES = ("console",)
#: ``console://`` and ``console://stdout`` print to standard output.
TARGETS = ("stdout",)
SETTINGS_KEYS = ("file",)


def console_target(url: str) -> str:
    """``stdout`` for a ``console://`` URL; :class:`InvalidChannelURL` otherwise."""
    parts = urlsplit(url)
    target = (parts.netloc + parts.path).strip("/").lower() or "stdout"
    if target == "stderr":
        raise InvalidChannelURL(
            "console://stderr would print messages, with positions and links, into the hub's "
            "log (standard error): use console:// (standard output) or [plugins.console] file"
        )
    if target not in TARGETS:
        raise InvalidChannelURL(
            f"console:// prints to stdout, not {target!r}: use console:// or console://stdout"
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


def shares_log_stream(stream: TextIO) -> bool:
    """Whether text written to ``stream`` would land where the hub's log goes: a logging
    handler writes to it, or to the same open file (stdout joined to stderr), unless that is a
    terminal (read by a person, not kept)."""
    for handler in _log_handlers():
        target = getattr(handler, "stream", None)
        if target is None:
            continue
        if target is stream or (_same_file(target, stream) and not _is_terminal(stream)):
            return True
    return False


class ConsoleNotifier(BaseNotifier):
    """Prints notifications to the hub's standard output, or appends them to ``file``."""

    name = "console"
    scheme_names = CONSOLE_SCHEMES

    def __init__(self, file: Path | None = None) -> None:
        self.file = file

    def validate(self, url: str) -> None:
        super().validate(url)
        console_target(url)

    async def send(self, notification: Notification) -> DeliveryResult:
        try:
            console_target(notification.url)
        except InvalidChannelURL as exc:
            return DeliveryResult.failure(str(exc), permanent=True)
        if self.file is not None:
            return self._append(render(notification))
        # Looked up at send time, not import time, so redirected streams (pytest, the demo)
        # receive the output.
        stream = sys.stdout
        if shares_log_stream(stream):
            return DeliveryResult.failure(
                "console:// would print this message, with positions and links, into the "
                "hub's log (standard output is the log's stream here): set [plugins.console] "
                "file, or give this contact another channel",
                permanent=True,
            )
        stream.write(render(notification))
        stream.flush()
        return DeliveryResult.success("printed to stdout")

    def _append(self, text: str) -> DeliveryResult:
        assert self.file is not None
        try:
            descriptor = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(descriptor, "a", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            return DeliveryResult.failure(f"cannot append to [plugins.console] file: {exc}")
        return DeliveryResult.success("written to the console file")


def _log_handlers() -> list[logging.Handler]:
    """The handlers of the root logger and of every logger that does not propagate to it."""
    handlers = list(logging.getLogger().handlers)
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger) and not logger.propagate:
            handlers += logger.handlers
    return handlers


def _same_file(one: object, other: TextIO) -> bool:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        first = os.fstat(one.fileno())  # type: ignore[attr-defined]
        second = os.fstat(other.fileno())
        return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)
    return False


def _is_terminal(stream: TextIO) -> bool:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        return stream.isatty()
    return False


@hookimpl
def natalia_notifiers(settings: Mapping[str, Any]) -> Iterable[Notifier]:
    """The console notifier; ``[plugins.console] file`` sends its output to that file."""
    table = settings_table(settings, "console", SETTINGS_KEYS)
    file = table.get("file")
    if file is None:
        return [ConsoleNotifier()]
    if not isinstance(file, str) or not Path(file).is_absolute():
        raise PluginError("[plugins.console] file must be an absolute path, e.g. /var/log/x")
    return [ConsoleNotifier(Path(file))]
