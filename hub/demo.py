"""``natalia demo``: the whole alarm path once, on this machine, with real parts.

A Mosquitto on a free port with the shipped config, the hub as its own process on SQLite, a
local SMTP server and a local webhook receiver; a simulated wristband pulls its alarm and the
demo shows every delivery and the time from trigger to last delivery. With ``--serve`` it then
keeps the hub and its API running for the SDK examples. Everything it started is stopped again,
also on failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from broker.launcher import BrokerProcess, free_port
from devicekit.protocol import AckStage, AlarmKind, Position, utcnow
from hub.admin import add_contact, add_defender, add_device
from hub.config import load_config
from hub.db import engine_for
from hub.localsinks import MailCatcher, WebhookCatcher
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.setup import allow_loopback, broker_settings, init_directory
from hub.store import Store

DEVICE_ID = "demo-wristband-1"
# A demo position (Stockholm city centre); real positions never appear in logs.
DEMO_POSITION = (59.32932, 18.06858, 9.0)


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the hub exited with code {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hub was not ready within {timeout:g} s")
        time.sleep(0.05)


def start_hub_process(
    config_path: Path, ready_file: Path, timeout: float = 30, **popen: Any
) -> subprocess.Popen[bytes]:
    """``natalia hub run`` as a child process; returns once it is connected to the broker."""
    command = [sys.executable, "-m", "hub.cli", "hub", "run", "-c", str(config_path)]
    process = subprocess.Popen([*command, "--ready-file", str(ready_file)], **popen)
    try:
        _wait_for_file(ready_file, process, timeout)
    except BaseException:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_demo(keep: bool = False, serve: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="natalia-demo-"))
    with contextlib.ExitStack() as cleanup:
        if not keep:
            cleanup.callback(shutil.rmtree, workdir, True)
        else:
            print(f"demo directory (kept): {workdir}")
        config_path = init_directory(workdir, port=free_port(), http_port=free_port())
        allow_loopback(config_path)  # the demo's SMTP and webhook receivers are local
        console = workdir / "hq-console.txt"
        _console_to_file(config_path, console)
        config = load_config(config_path)
        assert config.broker.data_dir is not None
        broker = BrokerProcess(broker_settings(config.broker.data_dir, config.broker.port)).start()
        cleanup.callback(broker.stop)
        mail = MailCatcher(free_port()).start()
        cleanup.callback(mail.stop)
        webhook = WebhookCatcher().start()
        cleanup.callback(webhook.stop)

        engine = engine_for(config)
        registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
        defender = add_defender(engine, "Demo Defender", timezone="Europe/Stockholm")
        assert defender.id is not None
        creds = add_device(engine, DEVICE_ID, defender.id, config.broker.data_dir)
        broker.reload()
        add_contact(engine, registry, "HQ duty desk", "console://", None)
        add_contact(
            engine,
            registry,
            "Trusted contact (e-mail)",
            mail.mailto("trusted.contact@natalia.example"),
            defender.id,
        )
        add_contact(engine, registry, "Partner NGO (webhook)", webhook.json_url(), defender.id)
        print(
            f"demo: broker on port {broker.port}, defender {defender.id}, device {DEVICE_ID}, "
            "3 recipients (console, e-mail, webhook)"
        )

        hub = start_hub_process(config_path, workdir / "hub.ready")
        cleanup.callback(stop_process, hub)

        from devicekit.wristband import Wristband

        wristband = Wristband(
            DEVICE_ID,
            creds.password,
            key=creds.key,
            host="127.0.0.1",
            port=broker.port,
            state_dir=workdir / "wristband",
        )
        wristband.start()
        cleanup.callback(wristband.stop)
        lat, lon, accuracy = DEMO_POSITION
        started = time.time()
        alarm = wristband.trigger(
            AlarmKind.PANIC,
            Position(lat=lat, lon=lon, accuracy_m=accuracy, fix_ts=utcnow()),
            battery=87,
        )
        print(f"demo: wristband pulled, alarm {alarm.alarm_id} sent")
        wristband.wait_for_ack(alarm.alarm_id, AckStage.RECEIVED, timeout=30)
        print("demo: hub acknowledged receipt to the wristband")
        wristband.wait_for_ack(alarm.alarm_id, AckStage.NOTIFIED, timeout=60)
        if console.exists():
            print("demo: what the HQ duty desk's console channel showed:")
            print(console.read_text(), end="")
        result = _report(Store(engine), DEVICE_ID, alarm.alarm_id, started, mail, webhook)
        if serve and result == 0:
            from hub.demoserve import serve_api

            serve_api(workdir, engine, f"http://{config.http.host}:{config.http.port}")
        return result
    return 1  # not reached


def _report(
    store: Store,
    device_id: str,
    alarm_id: str,
    started: float,
    mail: MailCatcher,
    webhook: WebhookCatcher,
) -> int:
    stored = store.find_alarm(device_id, alarm_id)
    assert stored is not None and stored.id is not None
    deliveries = store.deliveries(stored.id)
    print(f"demo: deliveries of alarm A{stored.id}:")
    for delivery in deliveries:
        mark = "ok  " if delivery.status == "sent" else "FAIL"
        print(f"  {mark} {delivery.recipient:<26} {delivery.channel_masked:<40} {delivery.detail}")
    finished = [d.finished_at.timestamp() for d in deliveries if d.finished_at is not None]
    ok = sum(1 for d in deliveries if d.status == "sent")
    elapsed = (max(finished) - started) if finished else float("nan")
    print(
        f"demo: e-mails received by the local SMTP server: {len(mail.received)}, "
        f"webhook posts received: {len(webhook.received)}"
    )
    all_ok = ok == len(deliveries) > 0 and len(mail.received) == 1 and len(webhook.received) == 1
    print(
        f"demo: {'OK' if all_ok else 'FAILED'} alarm A{stored.id} deliveries {ok}/"
        f"{len(deliveries)} ok, end-to-end {elapsed:.3f} s from trigger to last delivery"
    )
    return 0 if all_ok else 1


def _console_to_file(config_path: Path, console: Path) -> None:
    """The HQ desk's ``console://`` channel writes to ``console`` (the demo prints it at the
    end): standard output may be the hub's log stream (``make demo 2>&1 | tee``), which the
    console channel refuses, since its messages carry positions and live links."""
    with config_path.open("a") as config:
        config.write(f"\n[plugins.console]\nfile = {json.dumps(str(console))}\n")
