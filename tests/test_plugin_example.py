"""The third-party plugin template in examples/plugin works as a partner would use it.

Nothing is installed: the module is imported from its path and registered the way the entry
point would register it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from hub.plugin_manager import ENTRY_POINT_GROUP, NotifierRegistry, get_plugin_manager
from plugins.testing import check_notifier, make_notification
from tests.support.receivers import HTTPReceiver

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin"
API_KEY = "partner-api-key-0123456789"


@pytest.fixture
def example_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "natalia_notifier_example", EXAMPLE / "natalia_notifier_example.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_registered_example_plugin_receives_example_urls_and_reaches_the_webhook(
    example_module: ModuleType, http_receiver: HTTPReceiver
):
    http_receiver.responses.append((201, b'{"id": "case-1"}'))
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(example_module, name="natalia_notifier_example")
    registry = NotifierRegistry.from_plugins(
        pm, {"example": {"endpoint": f"{http_receiver.base_url}/natalia/alerts"}}
    )
    url = f"example://{API_KEY}@legal-team"
    notifier = registry.for_url(url)

    result = asyncio.run(
        check_notifier(notifier, url, notification=make_notification(delivery_id=31))
    )

    assert notifier.name == "example"
    assert result.ok and result.detail == "case case-1"
    (request,) = http_receiver.requests
    assert (request.method, request.path) == ("POST", "/natalia/alerts")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Idempotency-Key"] == "natalia-31"
    assert json.loads(request.body) == {
        "team": "legal-team",
        "recipient": "Test contact",
        "language": "en",
        "title": make_notification().title,
        "body": make_notification().body,
        "alarm": "TEST-0001",
        "test": True,
    }


def test_the_template_declares_its_entry_point_in_the_natalia_group():
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    entry_points = project["entry-points"][ENTRY_POINT_GROUP]
    assert entry_points == {"example": "natalia_notifier_example"}
    assert (EXAMPLE / "natalia_notifier_example.py").is_file()


def test_the_templates_own_tests_pass():
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
