"""The SDK examples run against ``natalia demo --serve``, exactly as examples/sdk/README.md says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "sdk"


def _read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


@dataclass
class DemoHub:
    """``natalia demo --serve`` running; its logs (stderr) go to ``log_file``."""

    process: subprocess.Popen[str]
    variables: dict[str, str]
    output: list[str]
    env_file: Path
    log_file: Path
    toml: str

    def stop(self) -> str:
        """SIGTERM; the whole log of the run."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                rest, _ = self.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                rest, _ = self.process.communicate()
            self.output.append(rest or "")
        return self.log_file.read_text()


@pytest.fixture(scope="module")
def demo_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoHub]:
    log_file = tmp_path_factory.mktemp("demo") / "demo.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "demo", "--serve"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
        )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    env_file = None
    try:
        for line in process.stdout:
            lines.append(line)
            if match := re.search(r"set -a; \. (\S+); set \+a", line):
                env_file = Path(match.group(1))
            if "serving until Ctrl-C" in line or time.monotonic() > deadline:
                break
        assert env_file is not None, "".join(lines)
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        toml = (env_file.parent / "hub.toml").read_text()
        demo = DemoHub(process, _read_env(env_file), lines, env_file, log_file, toml)
        yield demo
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, "".join(lines)
    assert not env_file.exists(), "the demo left its tokens behind"


def _run(example: str, variables: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / example)],
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_env_file_holds_one_token_per_integration_role(demo_hub: DemoHub) -> None:
    variables, output = demo_hub.variables, demo_hub.output
    assert set(variables) == {
        "NATALIA_URL",
        "NATALIA_TOKEN",
        "NATALIA_HQ_TOKEN",
        "NATALIA_ADMIN_TOKEN",
    }
    printed = "".join(output)
    assert not any(variables[name] in printed for name in variables if name != "NATALIA_URL")


def test_fund_example_submits_reviews_and_pays_out(demo_hub: DemoHub) -> None:
    variables = demo_hub.variables
    out = _run("fund_request.py", variables)
    assert re.search(r"submitted fund request \d+: temporary_relocation, 1800.00 EUR", out), out
    assert re.search(r"fund request \d+ is disbursed", out), out
    assert "cannot reject it any more (transition_not_allowed)" in out, out
    trail = out.split("audit trail:")[1]
    assert "api:demo-integration" in trail and " hq " in trail
    assert "api:demo-hq" not in trail  # a partner system is not told who at HQ decided
    assert trail.count("state") == 3, trail


def test_defenders_days_example_runs_a_training_alarm(demo_hub: DemoHub) -> None:
    variables = demo_hub.variables
    out = _run("defenders_days.py", variables)
    assert "queued for 2 participants" in out, out
    assert re.search(r"training wristband train-\d+-\d+ for registration \d+", out), out
    assert re.search(r"training alarm A\d+: kind test", out), out
    assert "training over: active=False" in out, out


def test_no_secret_or_coordinate_reaches_the_log_of_the_whole_run(demo_hub: DemoHub) -> None:
    """Last in this module: stops the demo after the examples ran, then reads every log line.

    The console channel prints the alarm (with its position) to stdout by design: it is a
    notification channel, not a log. The log is stderr.
    """
    from hub.demo import DEMO_POSITION

    password = re.search(r'^password = "([^"]+)"', demo_hub.toml, flags=re.M)
    assert password is not None
    log = demo_hub.stop()
    assert "alarm A1 from device demo-wristband-1: stored" in log  # the log is the real one
    assert "training alarm" in log
    secrets = [value for name, value in demo_hub.variables.items() if name != "NATALIA_URL"]
    secrets.append(password.group(1))
    for secret in secrets:
        assert secret not in log
        assert secret[:16] not in log  # nor a recognisable part of it
    lat, lon, _ = DEMO_POSITION
    for coordinate in (lat, lon):
        for shown in (
            f"{coordinate}",
            f"{coordinate:.4f}",
            f"{coordinate:.3f}",
            f"{coordinate:.2f}",
        ):
            assert shown not in log, f"a coordinate reached the log: {shown}"
