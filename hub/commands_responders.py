"""``natalia responder ...``: operators register responders and put them on or off call.

Responders' coordinates are never printed; ``list`` shows how old each position is instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from hub.config import HubConfig, load_config


def add_responder_commands(
    groups: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], object],
) -> None:
    """Add the ``responder`` group (add, list, available) to the ``natalia`` sub-commands."""
    responder = groups.add_parser(
        "responder", help="people near an alarm who can come (OwnTracks positions)"
    ).add_subparsers(dest="action", required=True)

    add = responder.add_parser(
        "add", help="register a responder; with --mqtt-user also their broker account"
    )
    add.add_argument("name")
    add.add_argument("url", help="channel URL, e.g. mailto://..., tgram://..., json://...")
    add.add_argument(
        "--radius-m",
        type=float,
        default=5000.0,
        help="how far they would travel to an alarm, metres (default 5000)",
    )
    add.add_argument(
        "--mqtt-user",
        help="broker username for their OwnTracks app (topic owntracks/USER/DEVICE)",
    )
    add.add_argument("--language", default="en")
    add.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="URL",
        help="channel tried when the one before fails (repeat for more)",
    )
    add.add_argument("--tests", action="store_true", help="also receive test alarms")
    add_config(add)
    add.set_defaults(func=responder_add)

    listing = responder.add_parser("list", help="responders, availability and position age")
    add_config(listing)
    listing.set_defaults(func=responder_list)

    available = responder.add_parser("available", help="put a responder on or off call")
    available.add_argument("responder_id", type=int, metavar="ID")
    state = available.add_mutually_exclusive_group(required=True)
    state.add_argument("--on", dest="available", action="store_const", const=True)
    state.add_argument("--off", dest="available", action="store_const", const=False)
    add_config(available)
    available.set_defaults(func=responder_available)


def _config(args: argparse.Namespace) -> HubConfig:
    return load_config(args.config_path)


def _engine(config: HubConfig) -> Engine:
    from hub.db import engine_for

    return engine_for(config)


def responder_add(args: argparse.Namespace) -> int:
    from hub.plugin_manager import NotifierRegistry, get_plugin_manager
    from hub.responders import register_responder

    config = _config(args)
    registry = NotifierRegistry.from_plugins(
        get_plugin_manager(load_entry_points=config.load_entry_points), config.plugins
    )
    added = register_responder(
        _engine(config),
        registry,
        config.broker.data_dir,
        args.name,
        args.url,
        args.radius_m,
        mqtt_user=args.mqtt_user,
        language=args.language,
        fallback_urls=args.fallback,
        receives_tests=args.tests,
    )
    if added.password is None:
        print(f"responder {added.responder.id}: {added.responder.name} (no position source)")
        return 0
    print(f"responder {added.responder.id}: {added.responder.name}")
    print(f"broker account {args.mqtt_user}; password (shown once): {added.password}")
    print(
        f"OwnTracks app: mode MQTT, username {args.mqtt_user}, this password, a device id "
        "such as 'phone'; host, port and TLS as in broker/README.md"
    )
    if not added.broker_reloaded:
        print("the broker is not running; it will read the new account when it starts")
    return 0


def responder_list(args: argparse.Namespace) -> int:
    from hub.plugin_api import mask_url
    from hub.responders import list_responders

    now = datetime.now(UTC)
    for responder in list_responders(_engine(_config(args))):
        state = "on call" if responder.available else "off"
        user = responder.mqtt_user or "-"
        print(
            f"{responder.id}\t{responder.name}\t{state}\t{responder.radius_m:.0f} m\t"
            f"user {user}\t{position_age(responder.position_at, now)}\t"
            f"{mask_url(responder.channel_url)}"
        )
    return 0


def responder_available(args: argparse.Namespace) -> int:
    from hub.responders import set_availability

    responder = set_availability(_engine(_config(args)), args.responder_id, args.available)
    state = "on call" if responder.available else "off call"
    print(f"responder {responder.id}: {responder.name} is {state}")
    return 0


def position_age(position_at: datetime | None, now: datetime) -> str:
    """How old a position is, for people: ``position 4 min ago`` (never the coordinates)."""
    if position_at is None:
        return "no position"
    age = now - position_at
    if age < timedelta(0):
        return "position just now"
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"position {seconds} s ago"
    if seconds < 3600:
        return f"position {seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"position {seconds // 3600} h ago"
    return f"position {seconds // 86400} days ago"
