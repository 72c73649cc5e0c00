"""The SDK examples run against ``natalia demo --serve``, exactly as examples/sdk/README.md says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "sdk"


def _read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


@pytest.fixture(scope="module")
def demo_hub() -> Iterator[tuple[dict[str, str], list[str]]]:
    """The demo left running; yields the env file's variables and the demo's output so far."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "demo", "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
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
        yield _read_env(env_file), lines
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
        lines.append(rest)
    assert process.returncode == 0, "".join(lines)
    assert env_file is not None and not env_file.exists(), "the demo left its tokens behind"


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


def test_the_env_file_holds_one_token_per_integration_role(demo_hub) -> None:
    variables, output = demo_hub
    assert set(variables) == {
        "NATALIA_URL",
        "NATALIA_TOKEN",
        "NATALIA_HQ_TOKEN",
        "NATALIA_ADMIN_TOKEN",
    }
    printed = "".join(output)
    assert not any(variables[name] in printed for name in variables if name != "NATALIA_URL")


def test_fund_example_submits_reviews_and_pays_out(demo_hub) -> None:
    variables, _ = demo_hub
    out = _run("fund_request.py", variables)
    assert re.search(r"submitted fund request \d+: temporary_relocation, 1800.00 EUR", out), out
    assert re.search(r"fund request \d+ is disbursed", out), out
    assert "cannot reject it any more (transition_not_allowed)" in out, out
    trail = out.split("audit trail:")[1]
    assert "api:demo-integration" in trail and "api:demo-hq" in trail
    assert trail.count("state") == 3, trail


def test_defenders_days_example_runs_a_training_alarm(demo_hub) -> None:
    variables, _ = demo_hub
    out = _run("defenders_days.py", variables)
    assert "queued for 2 participants" in out, out
    assert re.search(r"training wristband train-\d+-\d+ for registration \d+", out), out
    assert re.search(r"training alarm A\d+: kind test", out), out
    assert "training over: active=False" in out, out
