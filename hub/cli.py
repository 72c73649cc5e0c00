"""The ``natalia`` command: one entry point for operators, HQ staff and device makers.

Sub-commands import what they need lazily, so ``natalia device simulate`` works with only the
``device`` extra installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("NATALIA_CONFIG") or "hub.toml")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", help="hub config file (default: $NATALIA_CONFIG or ./hub.toml)"
    )


def build_parser() -> argparse.ArgumentParser:
    from hub import commands

    parser = argparse.ArgumentParser(
        prog="natalia", description="Personal alarm for human-rights defenders at risk."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    init = groups.add_parser("init", help="create a config directory (hub.toml, broker/)")
    init.add_argument("directory", type=Path)
    init.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    init.add_argument("--http-port", type=int, default=8080, help="hub web port (default 8080)")
    init.set_defaults(func=commands.init)

    demo = groups.add_parser("demo", help="run the whole alarm path once on this machine")
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="then keep the hub and its API running (for the SDK examples) until Ctrl-C",
    )
    demo.set_defaults(func=commands.demo)

    broker = groups.add_parser("broker", help="the Mosquitto broker").add_subparsers(
        dest="action", required=True
    )
    run_broker = broker.add_parser("run", help="render the config and run mosquitto")
    _add_config(run_broker)
    run_broker.set_defaults(func=commands.broker_run)
    from hub.commands_pki import add_device_stop_commands, add_pki_commands

    add_pki_commands(broker, _add_config)

    hub = groups.add_parser("hub", help="the hub service").add_subparsers(
        dest="action", required=True
    )
    run_hub = hub.add_parser("run", help="run the hub until SIGTERM")
    run_hub.add_argument(
        "--ready-file", type=Path, help="write the hub's pid here once it is connected"
    )
    _add_config(run_hub)
    run_hub.set_defaults(func=commands.hub_run)

    defender = groups.add_parser("defender", help="defenders").add_subparsers(
        dest="action", required=True
    )
    add = defender.add_parser("add", help="register a defender")
    add.add_argument("name")
    add.add_argument("--language", default="en")
    add.add_argument("--timezone", default="UTC", help="IANA zone, e.g. Europe/Stockholm")
    _add_config(add)
    add.set_defaults(func=commands.defender_add)
    listing = defender.add_parser("list")
    _add_config(listing)
    listing.set_defaults(func=commands.defender_list)
    settings = defender.add_parser(
        "set",
        help="cancel/duress codes (from NATALIA_CANCEL_CODE/NATALIA_DURESS_CODE or a "
        "prompt), consent to public broadcast, escalation policy",
    )
    settings.add_argument("defender_id", type=int)
    settings.add_argument("--codes", action="store_true", help="set the cancel and duress codes")
    public = settings.add_mutually_exclusive_group()
    public.add_argument(
        "--allow-public",
        dest="public",
        action="store_true",
        default=None,
        help="the defender consents to press and public channels",
    )
    public.add_argument("--no-public", dest="public", action="store_false")
    settings.add_argument("--policy", help="name of an escalation policy (`natalia policy set`)")
    _add_config(settings)
    settings.set_defaults(func=commands.defender_set)

    policy = groups.add_parser("policy", help="escalation policies").add_subparsers(
        dest="action", required=True
    )
    set_policy = policy.add_parser("set", help="store a policy from a TOML or JSON file")
    set_policy.add_argument("name", help="'default' applies to every defender without one")
    set_policy.add_argument("file", type=Path)
    _add_config(set_policy)
    set_policy.set_defaults(func=commands.policy_set)
    show_policy = policy.add_parser("show", help="print a policy (default: the default)")
    show_policy.add_argument("name", nargs="?", default="default")
    _add_config(show_policy)
    show_policy.set_defaults(func=commands.policy_show)

    contact = groups.add_parser("contact", help="people to notify").add_subparsers(
        dest="action", required=True
    )
    add = contact.add_parser(
        "add", help="add a contact of a defender, or an organisation-wide one (--hq, --org)"
    )
    add.add_argument("name")
    add.add_argument("url", help="channel URL, e.g. mailto://..., tgram://..., facebook://...")
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--defender", type=int, help="the defender's id")
    who.add_argument("--hq", action="store_true", help="HQ duty staff: told of every alarm")
    who.add_argument("--org", action="store_true", help="organisation-wide (give --role)")
    add.add_argument(
        "--role",
        choices=["trusted", "partner", "embassy", "press", "public", "hq"],
        help="recipient group used by escalation stages (default: trusted, or hq with --hq)",
    )
    add.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="URL",
        help="channel to try when the one before fails (repeat, in order)",
    )
    tests = add.add_mutually_exclusive_group()
    tests.add_argument(
        "--tests",
        dest="tests",
        action="store_true",
        default=None,
        help="also receives test alarms (default: HQ only)",
    )
    tests.add_argument("--no-tests", dest="tests", action="store_false")
    add.add_argument("--language", default="en")
    _add_config(add)
    add.set_defaults(func=commands.contact_add)
    listing = contact.add_parser("list")
    _add_config(listing)
    listing.set_defaults(func=commands.contact_list)
    from hub.commands_delivery import add_contact_state_commands, add_retention_commands

    add_contact_state_commands(contact, _add_config)

    device = groups.add_parser("device", help="wristbands").add_subparsers(
        dest="action", required=True
    )
    add = device.add_parser("add", help="register a wristband and create its broker account")
    add.add_argument("device_id")
    add.add_argument("--defender", type=int, required=True)
    add.add_argument(
        "--encrypt",
        action="store_true",
        help="refuse its payloads unless encrypted with its key (hides positions from the broker)",
    )
    _add_config(add)
    add.set_defaults(func=commands.device_add)
    listing = device.add_parser("list")
    _add_config(listing)
    listing.set_defaults(func=commands.device_list)
    add_device_stop_commands(device, _add_config)
    from hub.commands_devices import add_device_commands

    add_device_commands(device, _add_config)
    try:
        from devicekit.cli import add_commands
    except ImportError:  # the device extra is not installed
        pass
    else:
        add_commands(device)

    alarms = groups.add_parser("alarms", help="alarms and their timeline").add_subparsers(
        dest="action", required=True
    )
    listing = alarms.add_parser("list")
    _add_config(listing)
    listing.set_defaults(func=commands.alarms_list)
    show = alarms.add_parser("show", help="timeline and deliveries of one alarm")
    show.add_argument("ref", help="alarm reference, e.g. A12")
    _add_config(show)
    show.set_defaults(func=commands.alarms_show)
    for action, text in (
        ("ack", "someone is on it: stops their reminders, tells the wristband"),
        ("verify", "HQ confirms the alarm: unlocks stages waiting for verification"),
        ("escalate", "run every stage still waiting for its delay, now"),
        ("resolve", "close the alarm: the defender is safe"),
        ("false-alarm", "close the alarm as a false alarm"),
    ):
        hq = alarms.add_parser(action, help=text)
        hq.add_argument("ref", help="alarm reference, e.g. A12")
        hq.add_argument("--by", required=True, help="who takes the action (for the timeline)")
        _add_config(hq)
        hq.set_defaults(func=commands.alarm_action, hq_action=action)

    rejected = groups.add_parser("rejected", help="messages the hub refused").add_subparsers(
        dest="action", required=True
    )
    listing = rejected.add_parser("list")
    _add_config(listing)
    listing.set_defaults(func=commands.rejected_list)

    from hub.commands_responders import add_responder_commands

    add_responder_commands(groups, _add_config)
    from hub.commands_tokens import add_token_commands

    add_token_commands(groups, _add_config)
    from hub.commands_keys import add_keys_commands

    add_keys_commands(groups, _add_config)
    add_retention_commands(groups, _add_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from hub.logs import configure_logging

    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    args.config_path = _config_path(args) if hasattr(args, "config") else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from hub.commands import USER_ERRORS

        if isinstance(exc, USER_ERRORS):
            print(f"natalia: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
