"""The code sdk/README.md shows type-checks and works as shown, on a real hub."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from sdk import Client
from sdk.models import ApiRole
from tests.support.api import ApiHub

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "sdk" / "README.md"
EXAMPLE_URL = "https://hub.example.org"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


class Stop(Exception):
    """Ends the stream example, which would otherwise wait for events forever."""


def test_every_example_type_checks(tmp_path: Path) -> None:
    files = []
    for number, block in enumerate(python_blocks()):
        files.append(tmp_path / f"readme_example_{number}.py")
        files[-1].write_text(block)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def hub_env(api: ApiHub, monkeypatch: pytest.MonkeyPatch) -> ApiHub:
    monkeypatch.setenv("NATALIA_URL", api.base_url)
    monkeypatch.setenv("NATALIA_TOKEN", api.tokens[ApiRole.ADMIN])
    return api


def run(block: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_example", **names}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    return namespace


def an_alarm(api: ApiHub) -> int:
    """A real (training) alarm for the examples to act on, without a wristband."""
    with Client(api.base_url, api.tokens[ApiRole.ADMIN]) as client:
        event = client.events.create(
            name="README days", starts_on=date(2031, 1, 1), ends_on=date(2031, 1, 2)
        )
        defender = client.defenders.create(name="README defender")
        registration = client.events.register(event.id, kind="defender", defender_id=defender.id)
        client.events.start_training(event.id)
        return client.events.training_alarm(event.id, registration_id=registration.id).id


def test_the_examples_run_against_a_real_hub(
    hub_env: ApiHub, capsys: pytest.CaptureFixture[str]
) -> None:
    alarm_id = an_alarm(hub_env)
    blocks = python_blocks()
    quickstart, asynchronous, alarms, errors, pagination, retries, stream, webhooks = blocks

    assert EXAMPLE_URL in quickstart
    run(quickstart.replace(EXAMPLE_URL, hub_env.base_url))
    assert capsys.readouterr().out.startswith("admin\n")
    run(asynchronous)
    assert "README defender" in capsys.readouterr().out
    run(alarms)
    with Client.from_env() as client:
        assert client.alarms.get(alarm_id).state == "acknowledged"
    run(errors)
    assert capsys.readouterr().out.endswith("404 not_found no alarm 999999\n('language',)\n")
    assert len(run(pagination)["page"].items) <= 50
    run(retries)

    seen: list[Any] = []

    def stop_after_first(*args: Any) -> None:
        seen.append(args)
        raise Stop

    from_start = stream.replace("last_seen: int | None = None", "last_seen: int | None = 0")
    assert from_start != stream
    with pytest.raises(Stop):
        run(from_start, print=stop_after_first)
    assert seen and seen[0][0].startswith("A")

    receive = run(webhooks)["receive"]
    event = {"id": "alarm_event.1", "type": "alarm.received", "created_at": "2030-01-01T00:00:00Z"}
    body = json.dumps({**event, "data": {}}).encode()
    secret = "whsec_readme"
    now = int(time.time())
    digest = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert receive(body, f"t={now},v1={digest}", secret).type == "alarm.received"
    assert receive(body.replace(b"received", b"resolved"), f"t={now},v1={digest}", secret) is None
