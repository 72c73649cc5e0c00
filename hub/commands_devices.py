"""``natalia device provision`` and ``natalia device resume``: a wristband's identity.

``provision`` registers the device (or, with ``--rekey``, gives a registered one a new password
and key), optionally issues its client certificate, and writes its provisioning bundle
(``devicekit.bundle``) as a JSON file and a QR code, both mode 0600: they hold the password and
the key. Nothing secret is printed unless ``--qr-terminal`` is asked for.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.config import BrokerSettings
from broker.pki import Pki, _write
from devicekit.bundle import ProvisioningBundle, certificate_fingerprints, load_bundle
from devicekit.topics import PREFIX
from hub.admin import AdminError, DeviceCredentials
from hub.commands_pki import _config, _data_dir, _engine, _print_reload
from hub.config import ConfigError, HubConfig
from hub.models import Device

QR_KINDS = {"png": ("png",), "svg": ("svg",), "both": ("png", "svg"), "none": ()}


def add_device_commands(
    device: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], object],
) -> None:
    """Add ``provision`` and ``resume`` to the ``device`` group."""
    provision = device.add_parser(
        "provision",
        help="register a wristband and write its bundle (JSON file + QR code) for flashing",
    )
    provision.add_argument("device_id")
    provision.add_argument("--defender", type=int, help="the defender's id (new devices)")
    provision.add_argument(
        "--rekey",
        action="store_true",
        help="a registered device: new password and key, anti-replay reset, old certificate "
        "superseded (also brings back a revoked device)",
    )
    provision.add_argument(
        "--encrypt", action="store_true", help="the device must encrypt its payloads"
    )
    provision.add_argument(
        "--cert",
        action="store_true",
        help="issue a client certificate and point the device at [broker] cert_port",
    )
    provision.add_argument(
        "--host", help="broker name or address devices use (default: the server certificate's)"
    )
    provision.add_argument(
        "--out", type=Path, default=Path("."), help="directory for the bundle (default: .)"
    )
    provision.add_argument("--qr", choices=sorted(QR_KINDS), default="png", help="QR file(s)")
    provision.add_argument(
        "--qr-terminal",
        action="store_true",
        help="also print the QR code in the terminal (it holds the password and key)",
    )
    add_config(provision)
    provision.set_defaults(func=device_provision)

    resume = device.add_parser(
        "resume", help="bring a suspended wristband back, with a new broker password"
    )
    resume.add_argument("device_id")
    add_config(resume)
    resume.set_defaults(func=device_resume)


def device_provision(args: argparse.Namespace) -> int:
    from broker.launcher import signal_running_broker
    from hub.admin import add_device, rekey_device

    config = _config(args)
    pki = Pki(BrokerSettings(data_dir=_data_dir(config)).pki_dir)
    port = _device_port(config, args.cert)
    if not pki.ca_cert.exists():
        raise ConfigError("no CA: run `natalia broker ca init` and `natalia broker cert server`")
    host = args.host or _server_host(pki)
    json_path = bundle_path(args.out, args.device_id, "json")
    if json_path.exists():
        raise FileExistsError(f"{json_path} exists: flash or delete it first")
    args.out.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = _engine(config)
    if args.rekey:
        device = _device(engine, args.device_id)
        if device is not None and args.defender not in (None, device.defender_id):
            raise AdminError(f"device {device.id!r} belongs to defender {device.defender_id}")
        creds = rekey_device(
            engine, args.device_id, config.broker.data_dir, encrypt=args.encrypt or None
        )
    elif args.defender is None:
        raise AdminError("give --defender ID (or --rekey for a registered device)")
    else:
        creds = add_device(
            engine, args.device_id, args.defender, config.broker.data_dir, encrypt=args.encrypt
        )
    if args.cert:
        pki.issue_device(args.device_id)
    reloaded = signal_running_broker(BrokerSettings(data_dir=_data_dir(config)))
    registered = _device(engine, args.device_id)
    encrypt = registered is not None and registered.encrypt
    bundle = make_bundle(creds, pki, host, port, cert=args.cert, encrypt=encrypt)
    written = write_bundle(bundle, args.out, QR_KINDS[args.qr])
    what = "re-keyed" if args.rekey else "registered"
    print(f"device {creds.device_id} {what}; bundle for {host}:{port} written (mode 0600):")
    for path in written:
        print(f"  {path}")
    if QR_KINDS[args.qr] or args.qr_terminal:
        if load_bundle(bundle.qr_payload()).complete:
            print("the QR code holds the whole bundle")
        else:
            print("the QR code is too small for the certificates: it holds everything else and")
            print("the CA fingerprint; flash ca_cert, client_cert and client_key from the file")
    print("they hold the password and signing key: give them to the flashing step only, then")
    print("delete them")
    if args.qr_terminal:
        _qr(bundle.qr_payload()).terminal(out=sys.stdout, compact=True)
    _print_reload(reloaded)
    return 0


def make_bundle(
    creds: DeviceCredentials, pki: Pki, host: str, port: int, *, cert: bool, encrypt: bool
) -> ProvisioningBundle:
    """The bundle of freshly issued credentials, with the CA (and the client certificate)."""
    ca_pem = pki.ca_cert.read_text()
    return ProvisioningBundle(
        device_id=creds.device_id,
        username=creds.device_id,
        password=creds.password,
        key=creds.key,
        encrypt=encrypt,
        host=host,
        port=port,
        cert=cert,
        ca_sha256=certificate_fingerprints(ca_pem),
        ca_cert=ca_pem,
        client_cert=pki.device_cert(creds.device_id).read_text() if cert else None,
        client_key=pki.device_key(creds.device_id).read_text() if cert else None,
        topic_prefix=f"{PREFIX}/{creds.device_id}",
    )


def write_bundle(
    bundle: ProvisioningBundle, directory: Path, qr_kinds: tuple[str, ...]
) -> list[Path]:
    """Write ``<id>.bundle.json`` and the QR code files, each mode 0600; return their paths."""
    written = [bundle_path(directory, bundle.device_id, "json")]
    _write(written[0], bundle.to_json().encode(), 0o600)
    qr = _qr(bundle.qr_payload())
    for kind in qr_kinds:
        image = io.BytesIO()
        qr.save(image, kind=kind, scale=4, border=4)
        written.append(bundle_path(directory, bundle.device_id, kind))
        _write(written[-1], image.getvalue(), 0o600)
    return written


def bundle_path(directory: Path, device_id: str, kind: str) -> Path:
    """Where ``provision`` writes the bundle of ``device_id`` as ``kind`` (json, png, svg)."""
    return directory / f"{device_id}.bundle.{kind}"


def device_resume(args: argparse.Namespace) -> int:
    from hub.admin import resume_device

    config = _config(args)
    done = resume_device(_engine(config), args.device_id, config.broker.data_dir)
    print(f"device {done.device_id} resumed: the hub accepts its messages again")
    print(f"new broker password (shown once): {done.password}")
    if done.certificate_serial is not None:
        print(f"certificate {done.certificate_serial:x} taken off hold in the CRL")
    _print_reload(done.broker_reloaded)
    return 0


def _qr(payload: bytes) -> Any:
    import segno

    return segno.make(payload, error="l", micro=False)


def _device_port(config: HubConfig, cert: bool) -> int:
    port = config.broker.cert_port if cert else config.broker.tls_port
    if port is None:
        name = "cert_port" if cert else "tls_port"
        raise ConfigError(
            f"[broker] {name} is not set: devices connect over TLS only (broker/README.md, "
            "'TLS, certificates and revocation')"
        )
    return port


def _server_host(pki: Pki) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    if not pki.server_cert.exists():
        raise ConfigError(
            "no server certificate: run `natalia broker ca init` and `natalia broker cert "
            "server --host NAME` (or give --host)"
        )
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    [name] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(name.value)


def _device(engine: Engine, device_id: str) -> Device | None:
    with Session(engine) as session:
        return session.get(Device, device_id)
