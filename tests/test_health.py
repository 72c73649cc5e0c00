"""Operators learn when the hub cannot do its job: /healthz, the alive file and the external
dead-man check, through a broker outage and the hub's own stop."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from broker.launcher import free_port
from tests.support.hubs import RunningHub, hub_config
from tests.support.receivers import wait_until

DEADMAN = Path(__file__).resolve().parents[1] / "scripts" / "deadman-check"


def deadman(*args: str) -> int:
    return subprocess.run([str(DEADMAN), *args], capture_output=True, timeout=30).returncode


def test_health_follows_the_broker_and_the_hub(broker, tmp_path: Path) -> None:
    config = hub_config(broker, f"sqlite:///{tmp_path / 'natalia.db'}")
    config.http.enabled = True
    config.http.port = free_port()
    config.health.file = tmp_path / "hub.alive"
    config.broker.keepalive_s = 5
    url = f"http://127.0.0.1:{config.http.port}/healthz"
    hub = RunningHub(config).start()
    try:
        wait_until(lambda: httpx.get(url).status_code == 200)
        assert httpx.get(url).json()["status"] == "ok"
        wait_until(lambda: config.health.file is not None and config.health.file.exists())
        assert deadman(str(config.health.file), "60") == 0
        assert deadman("--url", url) == 0

        broker.process.stop()  # the broker goes away
        wait_until(lambda: httpx.get(url).status_code == 503, timeout=20)
        assert "not connected to the broker" in httpx.get(url).json()["problems"]
        assert not config.health.file.exists()
        assert deadman(str(config.health.file)) == 2
        assert deadman("--url", url) == 2

        broker.process.start()  # same port, same persistent session: the hub reconnects
        wait_until(lambda: httpx.get(url).status_code == 200, timeout=30)
        wait_until(config.health.file.exists)  # rewritten at the next timer round
        assert deadman(str(config.health.file), "60") == 0
    finally:
        hub.stop()
    assert not config.health.file.exists()  # a stopped hub is a dead hub
    assert deadman(str(config.health.file)) == 2
