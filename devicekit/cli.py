"""Device-side commands: ``simulate`` (a wristband on the command line) and ``schema``.

``python -m devicekit ...`` runs them alone; the hub's CLI mounts the same parsers under
``natalia device ...`` through :func:`add_commands`. Nothing here needs the hub installed, and
paho-mqtt is imported only when ``simulate`` runs.

``simulate`` prints one line per event and never a coordinate. It is safe to ``kill -9`` at any
moment: what was stored is re-sent by ``simulate --resume`` on the same ``--state-dir``.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devicekit.protocol import AlarmKind, Position, utcnow

if TYPE_CHECKING:
    from devicekit.wristband import Wristband

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3

PASSWORD_ENV = "NATALIA_DEVICE_PASSWORD"  # noqa: S105 (a variable name)
KEY_ENV = "NATALIA_DEVICE_KEY"
HOST_ENV = "NATALIA_MQTT_HOST"
PORT_ENV = "NATALIA_MQTT_PORT"
DEVICE_ID_ENV = "NATALIA_DEVICE_ID"
STATE_DIR_ENV = "NATALIA_STATE_DIR"


def add_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``simulate`` and ``schema`` to ``subparsers``; each sets ``func(args) -> exit code``."""
    _add_simulate(subparsers)
    _add_schema(subparsers)


def build_parser(prog: str = "python -m devicekit") -> argparse.ArgumentParser:
    """The stand-alone parser used by ``python -m devicekit``."""
    parser = argparse.ArgumentParser(prog=prog, description="Natalia device-side tools.")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m devicekit``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


# -- simulate ---------------------------------------------------------------------------------


def _add_simulate(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="act as a wristband: raise an alarm (or re-send pending ones) and wait for the ack",
        description=(
            "Act as a wristband: store an alarm in --state-dir, publish it, re-send it until the "
            "hub acks it. Safe to kill at any moment; run again with --resume to re-send what is "
            f"pending. Exit codes: {EXIT_OK} acked, {EXIT_TIMEOUT} no ack within --wait, "
            f"{EXIT_ERROR} error, {EXIT_USAGE} bad usage."
        ),
    )
    parser.add_argument("--host", help=f"broker host (env {HOST_ENV}; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"broker port (env {PORT_ENV}; default 1883)")
    parser.add_argument("--device-id", help=f"device id = MQTT username (env {DEVICE_ID_ENV})")
    parser.add_argument(
        "--password",
        default=None,
        help=f"MQTT password; prefer env {PASSWORD_ENV}, which other users cannot see in ps",
    )
    parser.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt payloads with the device key (PROTOCOL.md 5.5); the signing key itself "
        f"comes from env {KEY_ENV} only",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"where pending alarms and the seq counter live (env {STATE_DIR_ENV}; "
        "default ~/.local/state/natalia/devices/DEVICE_ID)",
    )
    parser.add_argument(
        "--kind",
        choices=[kind.value for kind in AlarmKind],
        default=AlarmKind.PANIC.value,
        help="alarm kind (default panic)",
    )
    parser.add_argument("--lat", type=float, help="latitude, WGS 84 degrees")
    parser.add_argument("--lon", type=float, help="longitude, WGS 84 degrees")
    parser.add_argument("--accuracy", type=float, help="accuracy radius in metres")
    parser.add_argument("--battery", type=int, help="battery percent 0-100")
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the hub's 'received' ack (default 30)",
    )
    parser.add_argument(
        "--resend-interval", type=float, default=5.0, help="seconds between re-sends (default 5)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="raise no new alarm: re-send what is pending in --state-dir and wait for its acks",
    )
    parser.add_argument(
        "--tls", action="store_true", help="use TLS, verifying the broker with the system CAs"
    )
    parser.add_argument("--cafile", type=Path, help="use TLS, verifying the broker with this CA")
    parser.add_argument(
        "--bundle",
        type=Path,
        help="the device's provisioning bundle (`natalia device provision`): device id, "
        "password, key, broker address and TLS come from it",
    )
    parser.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``simulate``; see the parser's description for what it does and its exit codes."""
    try:
        settings = _SimulateSettings.from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from devicekit.wristband import Wristband
    except ImportError:
        print("error: simulate needs paho-mqtt: pip install 'natalia[device]'", file=sys.stderr)
        return EXIT_ERROR

    _print_events()
    try:
        band = Wristband(
            settings.device_id,
            settings.password,
            key=settings.key,
            encrypt=args.encrypt or settings.encrypt,
            host=settings.host,
            port=settings.port,
            state_dir=settings.state_dir,
            tls=settings.tls,
            resend_interval=args.resend_interval,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        if args.resume:
            return _resume(band, args.wait)
        with band:
            alarm = band.trigger(AlarmKind(args.kind), settings.position, args.battery)
            return _wait_for_acks(band, [alarm.alarm_id], args.wait)
    except KeyboardInterrupt:
        print(f"interrupted; what is pending stays in {settings.state_dir}", flush=True)
        return 130


def _resume(band: Wristband, timeout: float) -> int:
    """Re-send what an earlier run left pending (the connect does it) and wait for the acks."""
    from devicekit.wristband import describe

    pending = band.pending_messages()
    for message in pending:
        print(f"{describe(message)} pending", flush=True)
    if not pending:
        print("nothing pending", flush=True)
        band.stop()
        return EXIT_OK
    with band:
        return _wait_for_acks(band, [message.alarm_id for message in pending], timeout)


def _wait_for_acks(band: Wristband, alarm_ids: list[str], timeout: float) -> int:
    """Wait until the hub has settled every alarm (and cancel) in ``alarm_ids``."""
    deadline = time.monotonic() + timeout
    try:
        for alarm_id in dict.fromkeys(alarm_ids):
            band.wait_settled(alarm_id, max(0.0, deadline - time.monotonic()))
    except TimeoutError as exc:
        print(f"timeout after {timeout:g} s: {exc}", flush=True)
        print("run again with --resume to keep re-sending what is pending", flush=True)
        return EXIT_TIMEOUT
    print("all acked", flush=True)
    return EXIT_OK


@dataclass(frozen=True)
class _SimulateSettings:
    """The options of ``simulate`` after the checks argparse cannot do, env fallbacks applied."""

    device_id: str
    password: str
    key: str
    host: str
    port: int
    state_dir: Path
    position: Position | None
    tls: ssl.SSLContext | None
    encrypt: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _SimulateSettings:
        """Check ``args``; raise ``ValueError`` saying what to fix."""
        from devicekit.signing import parse_key
        from devicekit.topics import validate_device_id

        if args.wait <= 0 or args.resend_interval <= 0:
            raise ValueError("--wait and --resend-interval must be > 0 seconds")
        if args.battery is not None and not 0 <= args.battery <= 100:
            raise ValueError("--battery must be 0-100")
        if args.bundle is not None:
            return cls._from_bundle(args)
        env = os.environ
        device_id = args.device_id or env.get(DEVICE_ID_ENV)
        if not device_id:
            raise ValueError(f"give --device-id (or set {DEVICE_ID_ENV})")
        password = args.password or env.get(PASSWORD_ENV)
        if not password:
            raise ValueError(f"set {PASSWORD_ENV} (or give --password)")
        key = env.get(KEY_ENV)
        if not key:
            raise ValueError(f"set {KEY_ENV} to the device's signing key (64 hex characters)")
        parse_key(key)
        try:
            port = args.port or int(env.get(PORT_ENV) or 1883)
        except ValueError:
            raise ValueError(f"{PORT_ENV} must be a port number") from None
        return cls(
            device_id=validate_device_id(device_id),
            password=password,
            key=key,
            host=args.host or env.get(HOST_ENV) or "127.0.0.1",
            port=port,
            state_dir=_state_dir(args, device_id),
            position=_position(args),
            tls=_tls(args),
        )

    @classmethod
    def _from_bundle(cls, args: argparse.Namespace) -> _SimulateSettings:
        """Settings from ``--bundle``; ``--host``, ``--port`` and ``--cafile`` still override."""
        from devicekit.bundle import load_bundle

        try:
            bundle = load_bundle(args.bundle)
            tls = _tls(args) or bundle.tls_context()
        except OSError as exc:
            raise ValueError(f"cannot use --bundle {args.bundle}: {exc.strerror or exc}") from None
        return cls(
            device_id=bundle.device_id,
            password=bundle.password,
            key=bundle.key,
            host=args.host or bundle.host,
            port=args.port or bundle.port,
            state_dir=_state_dir(args, bundle.device_id),
            position=_position(args),
            tls=tls,
            encrypt=bundle.encrypt,
        )


def _state_dir(args: argparse.Namespace, device_id: str) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "natalia" / "devices" / device_id


def _position(args: argparse.Namespace) -> Position | None:
    given = [args.lat, args.lon, args.accuracy]
    if all(value is None for value in given):
        return None
    if any(value is None for value in given):
        raise ValueError("give --lat, --lon and --accuracy together (or none: no fix)")
    try:
        return Position(lat=args.lat, lon=args.lon, accuracy_m=args.accuracy, fix_ts=utcnow())
    except ValueError:
        # pydantic's message would echo the coordinates; say what is wrong without them.
        raise ValueError(
            "--lat must be -90..90, --lon -180..180 and --accuracy 0..1000000 metres"
        ) from None


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.cafile is not None:
        try:
            return ssl.create_default_context(cafile=str(args.cafile))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot use --cafile {args.cafile}: {exc}") from None
    if args.tls:
        return ssl.create_default_context()
    return None


class _EventLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return line if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {line}"


def _print_events() -> None:
    """Print the wristband's log records, one line each (they never hold coordinates)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_EventLine("%(message)s"))
    logger = logging.getLogger("devicekit")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


# -- schema -----------------------------------------------------------------------------------


def _add_schema(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="write the JSON Schema of every protocol message",
        description="Write one JSON Schema file per channel ({channel}.json) into DIR.",
    )
    parser.add_argument(
        "dir", nargs="?", type=Path, default=Path("."), help="target directory (default: .)"
    )
    parser.set_defaults(func=run_schema)


def run_schema(args: argparse.Namespace) -> int:
    """Write the schemas and print each path written."""
    from devicekit.schema import write_schemas

    try:
        written = write_schemas(args.dir)
    except OSError as exc:
        print(f"error: cannot write schemas to {args.dir}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    for path in written:
        print(path)
    return EXIT_OK
