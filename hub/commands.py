"""Implementations of the ``natalia`` sub-commands (parsing lives in ``hub.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import os

from sqlalchemy.engine import Engine

from broker.config import BrokerConfigError
from broker.pki import PkiError
from hub.admin import AdminError
from hub.api.tokens import TokenError
from hub.config import ConfigError, HubConfig, load_config
from hub.escalation import PolicyError
from hub.lifecycle import LifecycleError
from hub.plugin_api import InvalidChannelURL, PluginError

#: Errors shown to the user as one line, without a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    AdminError,
    BrokerConfigError,
    ConfigError,
    InvalidChannelURL,
    PluginError,
    FileExistsError,
    LifecycleError,
    PkiError,
    PolicyError,
    TokenError,
)


def _config(args: argparse.Namespace) -> HubConfig:
    return load_config(args.config_path)


def _engine(config: HubConfig) -> Engine:
    from hub.db import engine_for

    return engine_for(config)


def init(args: argparse.Namespace) -> int:
    from hub.setup import init_directory

    path = init_directory(args.directory, args.port, args.http_port)
    print(f"created {path} and {args.directory / 'broker'}")
    print(f"next: natalia broker run -c {path}   and   natalia hub run -c {path}")
    return 0


def broker_run(args: argparse.Namespace) -> int:
    from broker.config import render
    from broker.launcher import find_mosquitto, raise_file_limit
    from hub.setup import broker_settings

    config = _config(args)
    if config.broker.data_dir is None:
        raise ConfigError("[broker] data_dir is not set: run `natalia init DIR` to create one")
    settings = broker_settings(
        config.broker.data_dir,
        config.broker.port,
        log_to_stdout=True,
        tls_port=config.broker.tls_port,
        cert_port=config.broker.cert_port,
        tls_bind_address=config.broker.tls_bind_address,
        max_connections=config.broker.max_connections,
    )
    conf = render(settings)
    binary = find_mosquitto()
    raise_file_limit(settings)  # inherited by mosquitto: every listener can fill up
    settings.pid_file.write_text(f"{os.getpid()}\n")  # exec keeps the pid
    os.execv(binary, [binary, "-c", str(conf)])  # noqa: S606 (no shell, fixed argv)
    return 1  # not reached


def hub_run(args: argparse.Namespace) -> int:
    from hub.service import Hub

    config = _config(args)

    async def run() -> None:
        hub = Hub(config, ready_file=args.ready_file)
        hub.install_signal_handlers()
        await hub.run()

    asyncio.run(run())
    return 0


def defender_add(args: argparse.Namespace) -> int:
    from hub.admin import add_defender

    defender = add_defender(_engine(_config(args)), args.name, args.language, args.timezone)
    print(f"defender {defender.id}: {defender.name}")
    return 0


def defender_list(args: argparse.Namespace) -> int:
    from hub.admin import list_defenders

    for defender in list_defenders(_engine(_config(args))):
        print(f"{defender.id}\t{defender.name}\t{defender.language}\t{defender.timezone}")
    return 0


def contact_add(args: argparse.Namespace) -> int:
    from hub.admin import add_contact
    from hub.plugin_manager import NotifierRegistry, get_plugin_manager

    config = _config(args)
    registry = NotifierRegistry.from_plugins(
        get_plugin_manager(load_entry_points=config.load_entry_points), config.plugins
    )
    from hub.models import Role

    role = Role(args.role) if args.role else (Role.HQ if args.hq else None)
    if args.org and role is None:
        raise AdminError("an organisation-wide contact needs --role (partner, press, ...)")
    contact = add_contact(
        _engine(config),
        registry,
        args.name,
        args.url,
        None if (args.hq or args.org) else args.defender,
        args.language,
        role=role,
        fallback_urls=args.fallback,
        receives_tests=args.tests,
    )
    print(f"contact {contact.id}: {contact.name}")
    return 0


def defender_set(args: argparse.Namespace) -> int:
    from hub.admin import set_defender_options

    cancel = duress = None
    if args.codes:
        cancel = _secret("NATALIA_CANCEL_CODE", "cancel code")
        duress = _secret("NATALIA_DURESS_CODE", "duress code")
    defender = set_defender_options(
        _engine(_config(args)),
        args.defender_id,
        cancel_code=cancel,
        duress_code=duress,
        allow_public_broadcast=args.public,
        policy_name=args.policy,
    )
    print(
        f"defender {defender.id}: codes {'set' if defender.cancel_code_hash else 'not set'}, "
        f"public broadcast {'allowed' if defender.allow_public_broadcast else 'not allowed'}"
    )
    return 0


def _secret(variable: str, what: str) -> str:
    value = os.environ.get(variable)
    if value:
        return value
    import getpass

    first = getpass.getpass(f"{what}: ")
    if getpass.getpass(f"{what} again: ") != first:
        raise AdminError(f"the two {what}s differ")
    return first


def policy_set(args: argparse.Namespace) -> int:
    from hub.admin import set_policy

    set_policy(_engine(_config(args)), args.name, args.file)
    print(f"policy {args.name!r} stored")
    return 0


def policy_show(args: argparse.Namespace) -> int:
    import json

    from sqlmodel import Session, select

    from hub.escalation import DEFAULT_POLICY, parse_policy
    from hub.models import EscalationPolicy

    with Session(_engine(_config(args))) as session:
        row = session.exec(
            select(EscalationPolicy).where(EscalationPolicy.name == args.name)
        ).first()
    if row is None and args.name != "default":
        raise AdminError(f"no escalation policy {args.name!r}")
    policy = parse_policy(row.document) if row is not None else DEFAULT_POLICY
    print(json.dumps(policy.model_dump(mode="json"), indent=2))
    return 0


def alarm_action(args: argparse.Namespace) -> int:
    from hub.actions import AlarmActions
    from hub.service import lifecycle_for

    config = _config(args)
    actions = AlarmActions(_engine(config), lifecycle_for(config))
    method = {
        "ack": actions.acknowledge,
        "verify": actions.verify,
        "escalate": actions.escalate,
        "resolve": actions.resolve,
        "false-alarm": actions.false_alarm,
    }[args.hq_action]
    method(args.ref, args.by)
    print(f"{args.ref}: {args.hq_action} recorded (by {args.by})")
    return 0


def contact_list(args: argparse.Namespace) -> int:
    from hub.admin import list_contacts
    from hub.plugin_api import mask_url

    for contact in list_contacts(_engine(_config(args))):
        owner = "HQ" if contact.defender_id is None else f"defender {contact.defender_id}"
        state = "" if contact.active else "\tdeactivated"
        print(f"{contact.id}\t{contact.name}\t{owner}\t{mask_url(contact.channel_url)}{state}")
    return 0


def device_add(args: argparse.Namespace) -> int:
    from hub.admin import add_device

    config = _config(args)
    creds = add_device(
        _engine(config),
        args.device_id,
        args.defender,
        config.broker.data_dir,
        encrypt=args.encrypt,
    )
    print(f"device {creds.device_id} registered; broker password (shown once): {creds.password}")
    print(f"signing key (shown once): {creds.key}")
    if not creds.broker_reloaded:
        print("the broker is not running; it will read the new account when it starts")
    return 0


def device_list(args: argparse.Namespace) -> int:
    from hub.admin import list_devices

    for device in list_devices(_engine(_config(args))):
        seen = device.last_seen_at.isoformat(timespec="seconds") if device.last_seen_at else "never"
        state = "active" if device.active else "suspended"
        print(f"{device.id}\tdefender {device.defender_id}\t{state}\tlast seen {seen}")
    return 0


def alarms_list(args: argparse.Namespace) -> int:
    from hub.store import Store

    store = Store(_engine(_config(args)))
    for alarm in store.alarms():
        print(
            f"A{alarm.id}\t{alarm.received_at.isoformat(timespec='seconds')}\t{alarm.kind}\t"
            f"{alarm.state}\tdevice {alarm.device_id}\tcopies {alarm.copies_received}"
        )
    return 0


def alarms_show(args: argparse.Namespace) -> int:
    from hub.store import Store

    store = Store(_engine(_config(args)))
    try:
        alarm_pk = int(args.ref.lstrip("Aa"))
    except ValueError:
        raise AdminError(f"{args.ref!r} is not an alarm reference like A12") from None
    alarm = store.get_alarm(alarm_pk)
    if alarm is None:
        raise AdminError(f"no alarm {args.ref}")
    duress = " (DURESS)" if alarm.duress else ""
    print(f"A{alarm.id} {alarm.kind}{duress} from {alarm.device_id}: {alarm.state}")
    for event in store.events(alarm_pk):
        print(
            f"  {event.at.isoformat(timespec='seconds')}  {event.kind:<16} {event.actor:<20} "
            f"{event.detail}"
        )
    for delivery in store.deliveries(alarm_pk):
        acked = " acknowledged" if delivery.acknowledged_at else ""
        if delivery.status == "retrying" and delivery.next_try_at:
            acked += f" (next try {delivery.next_try_at:%H:%M:%S})"
        print(
            f"  delivery {delivery.id} [{delivery.kind}]: {delivery.recipient} via "
            f"{delivery.channel_masked}: {delivery.status}{acked} {delivery.detail}"
        )
    for timer in store.timers(alarm_pk):
        state = f"done: {timer.outcome}" if timer.done_at else "waiting"
        print(
            f"  timer {timer.kind} {timer.payload} due {timer.due_at.isoformat(timespec='seconds')}"
            f": {state}"
        )
    return 0


def rejected_list(args: argparse.Namespace) -> int:
    from hub.store import Store

    for rejected in Store(_engine(_config(args))).rejected():
        print(
            f"R{rejected.id}\t{rejected.received_at.isoformat(timespec='seconds')}\t"
            f"{rejected.device_id or '?'}\t{rejected.channel or '?'}\t"
            f"{'SUSPICIOUS: ' if rejected.suspicious else ''}{rejected.reason}"
        )
    return 0


def demo(args: argparse.Namespace) -> int:
    from hub.demo import run_demo

    return run_demo(keep=args.keep, serve=args.serve)
