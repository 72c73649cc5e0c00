"""Each audience installs only what it needs: devicekit and sdk never pull in the hub's stack."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HUB_ONLY = (
    "gmqtt",
    "sqlmodel",
    "sqlalchemy",
    "pluggy",
    "apprise",
    "psycopg",
    "fastapi",
    "starlette",
    "uvicorn",
    "hub",
    "plugins",
)

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} must not be imported by this audience's code")
        return None
sys.meta_path.insert(0, Block())
{imports}
print("ok")
"""


def extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"base": project["dependencies"], **project["optional-dependencies"]}


@pytest.mark.parametrize(
    "imports",
    [
        "import devicekit, devicekit.wristband, devicekit.cli, devicekit.schema, devicekit.outbox",
        "from devicekit import Wristband; from devicekit.cli import main",
        "import sdk",
        "import sdk.errors, sdk.models, sdk.webhooks; from sdk import AsyncClient, Client",
        "import broker",
    ],
)
def test_device_and_sdk_code_never_imports_the_hub_stack(imports: str) -> None:
    code = BLOCKER.format(blocked=HUB_ONLY, imports=imports)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_device_and_sdk_extras_do_not_depend_on_the_hub_stack() -> None:
    declared = extras()
    for audience in ("base", "device", "sdk"):
        names = " ".join(declared[audience]).lower()
        assert not any(dep in names for dep in HUB_ONLY[:9]), (audience, declared[audience])
    assert "natalia[device]" in declared["hub"]


def test_the_sdk_needs_only_pydantic_and_httpx() -> None:
    declared = extras()
    needed = {re.split(r"[<>=!~\[; ]", dep)[0] for dep in declared["base"] + declared["sdk"]}
    assert needed == {"pydantic", "httpx"}
