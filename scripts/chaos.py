#!/usr/bin/env python3
"""Inject faults into a Natalia deployment on this machine and show that no alarm is lost.

Each scenario starts its own deployment in a temporary directory, on free loopback ports:
Mosquitto with the shipped config, the hub (``natalia hub run``) as a child process, wristbands
(the devicekit reference client, or light MQTT clients for the storm) and a local webhook
receiver standing in for HQ and the trusted contacts. Nothing on the machine is touched except
a scratch database that ``db-down`` creates, and drops again, on your PostgreSQL server.

    .venv/bin/python scripts/chaos.py                      # every scenario, operator sizes
    .venv/bin/python scripts/chaos.py --scenario hub-kill --rounds 50 --seed 7
    .venv/bin/python scripts/chaos.py --scenario db-down \\
        --postgres-url postgresql+psycopg://natalia:SECRET@db.example.org:5432/postgres

What each scenario proves (details, and the duplicate bound, in ``hub/faults.py``):

hub-kill     the hub is killed with SIGKILL --rounds times at random moments during a stream of
             alarms, then --aimed times each while it is sending: nothing acknowledged is lost,
             cut-off deliveries are sent again after the restart (however often they were cut
             off), and duplicates stay within the sends the kills caught in flight.
broker-kill  Mosquitto, holding alarms queued for the absent hub, is killed with SIGKILL right
             after a persistence snapshot: it loses what came after, the wristbands re-send it,
             the hub gets everything.
db-down      PostgreSQL refuses the hub's database (the server keeps running) while alarms
             arrive: nothing is acknowledged while it is down, wristbands keep the alarms, all
             are processed when it is back, also when a newer alarm overtakes them.
storm        --storm-devices devices raise an alarm each at once while the only channel answers
             503; then it recovers: every alarm is stored, acknowledged and delivered.

Prints one table (scenario | seed | sent | stored | notified | duplicated | lost | seconds) and a
line of facts per run. ``--seeds N`` runs each scenario N times (seeds --seed, --seed + 1, ...;
hub-kill draws its kill moments and db-down the moments of its alarms from the seed; the
others are run again as they are); ``--cpu-hog N`` keeps N busy processes running
beside the deployment, as a loaded machine would. Exits 1 if any alarm was lost, a duplicate
fell outside the bound, or a scenario could not run; the working directory (each run's hub.log,
broker log, database) is then kept and its path printed.

PostgreSQL: ``db-down`` needs a server and a role that may CREATE DATABASE (it creates
``natalia_chaos_<random>``, makes it refuse connections with ``ALTER DATABASE ... WITH
ALLOW_CONNECTIONS false`` plus ``pg_terminate_backend`` of its sessions, and drops it at the end).
The database named in --postgres-url is only used to connect; its data is never touched. Default:
$NATALIA_TEST_POSTGRES_URL, else the local server as user postgres.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from hub.faults import (
    SCENARIOS,
    FaultResult,
    run_broker_kill,
    run_db_down,
    run_hub_kill,
    run_storm,
)

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
COLUMNS = ("scenario", "seed", "sent", "stored", "notified", "duplicated", "lost", "seconds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Scenario details and the duplicate bound: hub/faults.py.",
    )
    parser.add_argument("--scenario", choices=("all", *SCENARIOS), default="all")
    parser.add_argument("--rounds", type=int, default=20, help="hub kills in hub-kill (20)")
    parser.add_argument(
        "--aimed",
        type=int,
        default=6,
        help="then hub kills in hub-kill each while the hub is sending, cutting the same "
        "deliveries off again and again (6)",
    )
    parser.add_argument(
        "--devices", type=int, default=8, help="wristbands in hub-kill, broker-kill, db-down (8)"
    )
    parser.add_argument("--alarms", type=int, default=10, help="alarms per wristband (10)")
    parser.add_argument(
        "--storm-devices", type=int, default=1000, help="devices in storm, one alarm each (1000)"
    )
    parser.add_argument("--outage", type=float, default=10.0, help="db-down outage, s (10)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("NATALIA_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a PostgreSQL server for db-down (default: $NATALIA_TEST_POSTGRES_URL or "
        f"{DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="random seed of hub-kill's kill moments and db-down's alarm order (1); see --seeds",
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="runs of each scenario, seeds --seed, --seed + 1, ..."
    )
    parser.add_argument(
        "--cpu-hog",
        type=int,
        default=0,
        metavar="N",
        help="busy processes running beside the deployment the whole time (0)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="longest wait for the system to settle, s"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="log warnings of the parts")
    args = parser.parse_args(argv)
    if args.cpu_hog < 0:
        parser.error("--cpu-hog must not be negative")
    if args.aimed < 0:
        parser.error("--aimed must not be negative")
    for name in ("rounds", "devices", "alarms", "storm_devices", "seeds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def runners(
    args: argparse.Namespace, workdir: Path, seed: int
) -> dict[str, Callable[[], FaultResult]]:
    """Each scenario's run with ``seed``, in a folder of its own under ``workdir``."""
    return {
        "hub-kill": lambda: run_hub_kill(
            workdir / f"hub-kill-{seed}",
            rounds=args.rounds,
            aimed=args.aimed,
            devices=args.devices,
            alarms=args.alarms,
            seed=seed,
            timeout=args.timeout,
        ),
        "broker-kill": lambda: run_broker_kill(
            workdir / f"broker-kill-{seed}",
            devices=args.devices,
            alarms=args.alarms,
            timeout=args.timeout,
        ),
        "db-down": lambda: run_db_down(
            args.postgres_url,
            workdir / f"db-down-{seed}",
            devices=args.devices,
            alarms=args.alarms,
            outage_s=args.outage,
            seed=seed,
            timeout=args.timeout,
        ),
        "storm": lambda: run_storm(
            workdir / f"storm-{seed}", devices=args.storm_devices, timeout=args.timeout
        ),
    }


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """``count`` processes spinning on a core each until the block ends."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def failures(result: FaultResult) -> list[str]:
    """What makes this row a failure, in words."""
    found = []
    if result.lost:
        found.append(f"{result.lost} alarm(s) lost")
    if result.acked < result.sent:
        found.append(f"{result.sent - result.acked} alarm(s) never acknowledged to the device")
    if result.duplicated > result.duplicate_bound or result.unexplained_duplicates:
        found.append(
            f"{result.duplicated} duplicates, bound {result.duplicate_bound} "
            f"({result.unexplained_duplicates} outside it)"
        )
    return found


Run = tuple[str, int]  #: (scenario, seed)


def table(results: dict[Run, FaultResult], errors: dict[Run, str]) -> str:
    rows: list[tuple[str, ...]] = [COLUMNS]
    for (name, seed), r in results.items():
        values = (seed, r.sent, r.stored, r.notified, r.duplicated, r.lost, f"{r.seconds:.1f}")
        rows.append((name, *map(str, values)))
    rows += [(name, str(seed), *["-"] * (len(COLUMNS) - 3), "ERROR") for name, seed in errors]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    workdir = Path(tempfile.mkdtemp(prefix="natalia-chaos-"))
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    seeds = range(args.seed, args.seed + args.seeds)
    results: dict[Run, FaultResult] = {}
    errors: dict[Run, str] = {}
    with cpu_hogs(args.cpu_hog):
        for name in chosen:
            for seed in seeds:
                print(f"chaos: running {name}, seed {seed} ...", file=sys.stderr, flush=True)
                try:
                    results[name, seed] = runners(args, workdir, seed)[name]()
                except Exception as exc:
                    traceback.print_exc()
                    errors[name, seed] = f"{type(exc).__name__}: {exc}"
    if args.cpu_hog:
        print(
            f"with {args.cpu_hog} busy process(es) beside the deployment, on {os.cpu_count()} CPUs"
        )
    print(table(results, errors))
    print()
    failed = bool(errors)
    for (name, seed), result in results.items():
        problems = failures(result)
        failed |= bool(problems)
        verdict = "FAILED: " + "; ".join(problems) if problems else "ok"
        print(
            f"{name} (seed {seed}): {verdict}. {result.notes}; duplicate bound "
            f"{result.duplicate_bound}, {result.checks.get('copies', 0)} re-sent copies "
            "recognised by the hub"
        )
    for (name, seed), error in errors.items():
        print(f"{name} (seed {seed}): could not run: {error}")
    if failed or args.keep:
        print(f"\nworking directory kept: {workdir} (hub.log of each scenario in its folder)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
