"""``natalia contact activate|deactivate`` and ``natalia retention run``: who may still receive,
and how long what was sent is kept."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hub.config import load_config


def add_contact_state_commands(
    contact: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], object],
) -> None:
    """Add ``deactivate`` and ``activate`` to the ``natalia contact`` group."""
    deactivate = contact.add_parser(
        "deactivate",
        help="stop everything to a contact at once: queued messages cancelled, links dead",
    )
    deactivate.add_argument("contact_id", type=int, metavar="ID")
    deactivate.add_argument("--by", required=True, help="who does it (for the timeline)")
    add_config(deactivate)
    deactivate.set_defaults(func=contact_state, active=False)
    activate = contact.add_parser("activate", help="let a deactivated contact receive again")
    activate.add_argument("contact_id", type=int, metavar="ID")
    activate.add_argument("--by", required=True, help="who does it")
    add_config(activate)
    activate.set_defaults(func=contact_state, active=True)


def add_retention_commands(
    groups: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], object],
) -> None:
    """Add the ``retention`` group (run) to the ``natalia`` sub-commands."""
    retention = groups.add_parser(
        "retention", help="erase positions older than [retention] positions_days"
    ).add_subparsers(dest="action", required=True)
    run = retention.add_parser(
        "run", help="erase them now (the running hub also does, every run_every_s)"
    )
    add_config(run)
    run.set_defaults(func=retention_run)


def contact_state(args: argparse.Namespace) -> int:
    from hub.admin import set_contact_active
    from hub.db import engine_for

    engine = engine_for(load_config(args.config_path))
    change = set_contact_active(engine, args.contact_id, args.active, args.by)
    state = "active" if change.contact.active else "deactivated"
    print(f"contact {change.contact.id} ({change.contact.name}): {state}")
    if change.cancelled:
        print(f"{change.cancelled} queued message(s) to it cancelled")
    return 0


def retention_run(args: argparse.Namespace) -> int:
    from hub.db import engine_for
    from hub.models import utc_now
    from hub.retention import apply_retention

    config = load_config(args.config_path)
    days = config.retention.positions_days
    result = apply_retention(engine_for(config), utc_now(), timedelta(days=days))
    print(f"retention ({days:g} days): {result}")
    return 0
