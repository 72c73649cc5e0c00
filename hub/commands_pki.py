"""``natalia broker ca|cert ...`` and ``natalia device suspend|revoke``: transport and identity.

The CA lives in ``<broker data dir>/pki`` (``broker.pki``); see broker/README.md for rotation
and revocation. Private keys are never printed, only their paths.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from broker.config import BrokerSettings
from broker.pki import Pki
from hub.config import ConfigError, HubConfig, load_config


def add_pki_commands(
    broker: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], object],
) -> None:
    """Add ``ca init`` and ``cert server|device|revoke|crl`` to the ``broker`` group."""
    from broker.pki import CA_DAYS, DEVICE_DAYS, SERVER_DAYS

    ca = broker.add_parser("ca", help="the broker's private CA").add_subparsers(
        dest="ca_action", required=True
    )
    init = ca.add_parser("init", help="create the CA key (mode 0600), certificate and CRL")
    init.add_argument("--name", default="Natalia broker CA", help="the CA's common name")
    init.add_argument("--days", type=int, default=CA_DAYS)
    add_config(init)
    init.set_defaults(func=ca_init)
    rollover = ca.add_parser(
        "rollover",
        help="start a CA rollover: a new CA issues, the old one stays trusted (broker/README.md)",
    )
    rollover.add_argument("--name", default="Natalia broker CA", help="the new CA's common name")
    rollover.add_argument("--days", type=int, default=CA_DAYS)
    add_config(rollover)
    rollover.set_defaults(func=ca_rollover)
    retire = ca.add_parser("retire", help="end a CA rollover: trust only the new CA")
    add_config(retire)
    retire.set_defaults(func=ca_retire)

    cert = broker.add_parser("cert", help="certificates and revocation").add_subparsers(
        dest="cert_action", required=True
    )
    server = cert.add_parser("server", help="(re)issue the broker's TLS certificate")
    server.add_argument(
        "--host",
        action="append",
        required=True,
        help="DNS name or IP address devices connect to (repeat for more)",
    )
    server.add_argument("--days", type=int, default=SERVER_DAYS)
    add_config(server)
    server.set_defaults(func=cert_server)

    device = cert.add_parser(
        "device", help="(re)issue a device's client certificate (CN = device id)"
    )
    device.add_argument("device_id")
    device.add_argument("--days", type=int, default=DEVICE_DAYS)
    device.add_argument(
        "--csr",
        type=Path,
        help="sign the device's own certificate request (PEM, CN = device id): its private key "
        "never leaves the device",
    )
    add_config(device)
    device.set_defaults(func=cert_device)

    revoke = cert.add_parser(
        "revoke", help="put a device's certificate on the CRL and reload the broker"
    )
    revoke.add_argument("device_id")
    add_config(revoke)
    revoke.set_defaults(func=cert_revoke)

    crl = cert.add_parser("crl", help="re-sign the CRL (before it lapses) and reload the broker")
    add_config(crl)
    crl.set_defaults(func=cert_crl)


def add_device_stop_commands(
    device: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], object],
) -> None:
    """Add ``suspend`` and ``revoke`` to the ``device`` group."""
    for name, text in (
        ("suspend", "stop a wristband at once: inactive, broker account removed"),
        ("revoke", "suspend and revoke its certificate for good (seized or lost)"),
    ):
        parser = device.add_parser(name, help=text)
        parser.add_argument("device_id")
        add_config(parser)
        parser.set_defaults(func=device_stop, stop=name)


def _config(args: argparse.Namespace) -> HubConfig:
    return load_config(args.config_path)


def _engine(config: HubConfig) -> Engine:
    from hub.db import engine_for

    return engine_for(config)


def _data_dir(config: HubConfig) -> Path:
    if config.broker.data_dir is None:
        raise ConfigError("[broker] data_dir is not set: run `natalia init DIR` to create one")
    return config.broker.data_dir


def _pki(config: HubConfig) -> Pki:
    return Pki(BrokerSettings(data_dir=_data_dir(config)).pki_dir)


def _reload(config: HubConfig) -> bool:
    from broker.launcher import signal_running_broker

    return signal_running_broker(BrokerSettings(data_dir=_data_dir(config)))


def ca_init(args: argparse.Namespace) -> int:
    pki = _pki(_config(args))
    pki.init_ca(args.name, args.days)
    print(f"CA created: {pki.ca_cert} (key {pki.ca_key}, mode 0600); CRL {pki.crl}")
    print("next: natalia broker cert server --host NAME, then set [broker] tls_port in hub.toml")
    return 0


def ca_rollover(args: argparse.Namespace) -> int:
    pki = _pki(_config(args))
    pki.rollover(args.name, args.days)
    print(f"new CA in {pki.ca_cert} (trusted with the old one, now in {pki.retired_dir})")
    print("next: restart the broker; re-flash every device with a bundle trusting both CAs")
    print("(natalia device provision ID --rekey); then natalia broker cert server --host ...;")
    print("then natalia broker ca retire (broker/README.md, 'CA rollover')")
    return 0


def ca_retire(args: argparse.Namespace) -> int:
    pki = _pki(_config(args))
    pki.retire()
    print(f"old CA retired: {pki.ca_cert} holds only the new CA; restart the broker")
    return 0


def cert_server(args: argparse.Namespace) -> int:
    config = _config(args)
    pki = _pki(config)
    pki.issue_server(args.host, args.days)
    print(f"server certificate {pki.server_cert} for {', '.join(args.host)}")
    if _reload(config):
        print("the broker reloaded it (SIGHUP)")
    return 0


def cert_device(args: argparse.Namespace) -> int:
    from sqlmodel import Session

    from hub.admin import AdminError
    from hub.models import Device

    config = _config(args)
    with Session(_engine(config)) as session:
        device = session.get(Device, args.device_id)
    if device is None or not device.active:
        raise AdminError(f"no active device {args.device_id!r}; add it with `natalia device add`")
    pki = _pki(config)
    replaced = pki.device_serial(args.device_id) is not None
    csr = None if args.csr is None else args.csr.read_bytes()
    pki.issue_device(args.device_id, args.days, csr)
    print(f"device certificate {pki.device_cert(args.device_id)}")
    if csr is None:
        key = pki.device_key(args.device_id)
        print(f"private key {key} (mode 0600): install it on the device")
    print(f"CA certificate for the device: {pki.ca_cert}")
    if replaced:
        print("the previous certificate is on the CRL (superseded)")
        _reload(config)
    return 0


def cert_revoke(args: argparse.Namespace) -> int:
    from hub.admin import AdminError

    config = _config(args)
    serial = _pki(config).revoke_device(args.device_id)
    if serial is None:
        raise AdminError(f"device {args.device_id!r} has no certificate")
    print(f"certificate {serial:x} of {args.device_id} revoked")
    if _reload(config):
        print("broker reloaded (SIGHUP): new connections with that certificate are refused")
    else:
        print("the broker is not running; it will read the CRL when it starts")
    print(
        "a connection already open stays open and the password account is untouched: "
        "`natalia device revoke` also removes the account, which disconnects it"
    )
    return 0


def cert_crl(args: argparse.Namespace) -> int:
    config = _config(args)
    path = _pki(config).write_crl()
    print(f"CRL re-signed: {path}")
    _print_reload(_reload(config))
    return 0


def device_stop(args: argparse.Namespace) -> int:
    from hub.admin import revoke_device, suspend_device

    config = _config(args)
    stop = suspend_device if args.stop == "suspend" else revoke_device
    done = stop(_engine(config), args.device_id, config.broker.data_dir)
    print(f"device {done.device_id} {args.stop}d: the hub refuses its messages")
    print("broker account removed" if done.account_removed else "it had no broker account left")
    if done.certificate_serial is not None:
        state = "on hold" if args.stop == "suspend" else "revoked"
        print(f"certificate {done.certificate_serial:x} {state} in the CRL")
    _print_reload(done.broker_reloaded)
    return 0


def _print_reload(reloaded: bool) -> None:
    if reloaded:
        print("broker reloaded (SIGHUP): it disconnects the device if connected")
    else:
        print("the broker is not running; it will read the change when it starts")
