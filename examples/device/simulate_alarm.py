"""Raise one alarm from a simulated wristband and wait for the hub's ack.

    NATALIA_DEVICE_PASSWORD=... NATALIA_DEVICE_KEY=... python examples/device/simulate_alarm.py \
        --host 127.0.0.1 --port 1883 --device-id wb-0001

Every option falls back to an environment variable (NATALIA_MQTT_HOST, NATALIA_MQTT_PORT,
NATALIA_DEVICE_ID, NATALIA_DEVICE_PASSWORD, NATALIA_STATE_DIR); the signing key comes from
NATALIA_DEVICE_KEY only, so neither secret appears in ``ps``. Exit code 0 when the hub acked the
alarm, 3 when no ack came within ``--wait`` seconds (the alarm stays in the state dir and a re-run
re-sends it with the same id).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from devicekit import AckStage, AlarmKind, Position, Wristband
from devicekit.protocol import utcnow


def parse_args() -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default=env.get("NATALIA_MQTT_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("NATALIA_MQTT_PORT", "1883")))
    parser.add_argument("--device-id", default=env.get("NATALIA_DEVICE_ID", "wb-demo"))
    parser.add_argument("--password", default=env.get("NATALIA_DEVICE_PASSWORD"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(env.get("NATALIA_STATE_DIR") or Path(tempfile.gettempdir()) / "natalia-wb"),
    )
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the ack")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    key = os.environ.get("NATALIA_DEVICE_KEY")
    if not args.password or not key:
        print("set NATALIA_DEVICE_PASSWORD and NATALIA_DEVICE_KEY", file=sys.stderr)
        return 2
    # A made-up fix; a real wristband passes its last GNSS fix, or None when it has none.
    fix = Position(lat=-12.0464, lon=-77.0428, accuracy_m=15.0, fix_ts=utcnow())
    with Wristband(
        args.device_id,
        args.password,
        key=key,
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
    ) as band:
        alarm = band.trigger(AlarmKind.TEST, position=fix, battery=90)
        print(f"alarm {alarm.alarm_id} stored, sending")
        try:
            ack = band.wait_for_ack(alarm.alarm_id, AckStage.RECEIVED, timeout=args.wait)
        except TimeoutError as exc:
            print(exc)
            return 3
        print(f"alarm {alarm.alarm_id} acked: {ack.stage.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
