"""The operator quick start (README "Operators" section) runs as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from broker.launcher import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_operator_quickstart_script_raises_and_delivers_an_alarm(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [
            str(ROOT / "examples/operator/quickstart.sh"),
            str(tmp_path / "site"),
            str(free_port()),
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "A1 panic from wb-0001: notified" in result.stdout
    assert "delivery 1 [alarm]: HQ duty desk via console://: sent" in result.stdout
    hub_log = (tmp_path / "site" / "hub.log").read_text()
    assert "alarm A1 from device wb-0001: stored" in hub_log
    assert "43.3178" not in hub_log, "a coordinate reached the hub's log"
