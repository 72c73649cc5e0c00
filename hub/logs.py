"""Logging set-up. Libraries that log payloads or addresses are held at WARNING or INFO.

Positions, tokens and channel URLs never go to a log: our own code logs ids and references only,
gmqtt logs payloads at DEBUG and Apprise logs recipients at INFO: both are pinned to WARNING.
"""

from __future__ import annotations

import logging
import sys

QUIET_LIBRARIES = {
    "gmqtt": logging.WARNING,
    "apprise": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "aiosmtpd": logging.WARNING,
    "mail.log": logging.WARNING,
    "sqlalchemy": logging.WARNING,
    # urllib3 logs request paths at DEBUG; Telegram's path carries the bot token.
    "urllib3": logging.WARNING,
    "requests": logging.WARNING,
}


def pin_library_loggers(level: int = logging.INFO) -> None:
    """Keep libraries that would log payloads, recipients or URLs at a safe level."""
    for name, floor in QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(level, floor))


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    pin_library_loggers(level)
