"""A wristband process killed before the hub's ack re-sends its alarm after a restart; the hub
stores it once and notifies each recipient once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.hubs import RunningHub, hub_config, open_store
from tests.support.population import populate_on_broker
from tests.support.receivers import wait_until


def simulate(
    broker, credentials: tuple[str, str], state_dir: Path, *extra: str
) -> subprocess.Popen[str]:
    password, key = credentials
    env = {**os.environ, "NATALIA_DEVICE_PASSWORD": password, "NATALIA_DEVICE_KEY": key}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devicekit",
            "simulate",
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            "--device-id",
            "wb-1",
            "--state-dir",
            str(state_dir),
            "--resend-interval",
            "0.5",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_killed_wristband_resends_after_restart_and_alarm_is_stored_once(
    broker, database_url, tmp_path: Path, smtp_server
) -> None:
    store = open_store(database_url)
    people = populate_on_broker(
        store.engine, broker, contacts={"Sister": smtp_server.url("sister@example.org")}
    )
    config = hub_config(broker, database_url)
    with RunningHub(config):  # create the hub's persistent session, then take the hub away
        pass
    state_dir = tmp_path / "wristband"

    first = simulate(
        broker,
        (people.device_password, people.device_key),
        state_dir,
        "--lat",
        "43.3",
        "--lon",
        "45.7",
        "--accuracy",
        "10",
        "--wait",
        "60",
    )
    assert first.stdout is not None
    line = first.stdout.readline()
    while " sent" not in line:  # the alarm left the device at least once, no hub to ack it
        assert line, "simulator exited before sending"
        line = first.stdout.readline()
    alarm_id = line.split()[1]
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    first.stdout.close()

    with RunningHub(config):
        second = simulate(
            broker,
            (people.device_password, people.device_key),
            state_dir,
            "--resume",
            "--wait",
            "30",
        )
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 0, output
        assert f"alarm {alarm_id} (panic) pending" in output  # found on disk after the kill
        assert "all acked" in output
        stored = wait_until(lambda: store.find_alarm("wb-1", alarm_id))
        rows = wait_until(lambda: [d for d in store.deliveries(stored.id) if d.status == "sent"])
    assert len(store.alarms()) == 1
    assert len(rows) == 1 and len(smtp_server.messages) == 1
