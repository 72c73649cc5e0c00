"""The plugin guide must document every hook exactly and list every built-in plugin."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest

from hub.plugin_api import DeliveryResult, Notification
from hub.plugin_manager import DEFAULT_PLUGINS, ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "plugins" / "README.md").read_text(encoding="utf-8")


def hookspec_signatures() -> dict[str, str]:
    """``def name(args) -> returns`` for each ``@hookspec`` function, as written in the source."""
    tree = ast.parse((ROOT / "hub" / "hookspecs.py").read_text(encoding="utf-8"))
    signatures = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            ast.unparse(d).startswith("hookspec") for d in node.decorator_list
        ):
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            signatures[node.name] = f"def {node.name}({ast.unparse(node.args)}){returns}:"
    return signatures


def test_there_are_hookspecs_to_document():
    assert "natalia_notifiers" in hookspec_signatures()


@pytest.mark.parametrize("name, signature", sorted(hookspec_signatures().items()))
def test_every_hook_is_documented_with_its_exact_signature(name, signature):
    assert f"### `{name}`" in GUIDE, f"plugins/README.md has no section for the hook {name}"
    assert signature in GUIDE, f"plugins/README.md must show: {signature}"


@pytest.mark.parametrize("module_name", DEFAULT_PLUGINS)
def test_every_builtin_plugin_is_listed_with_its_url_schemes(module_name):
    module = importlib.import_module(module_name)
    assert f"### `{module_name}`" in GUIDE
    for notifier in module.natalia_notifiers(settings={}):
        shown = [s for s in notifier.schemes if f"{s}://" in GUIDE]
        assert shown, f"plugins/README.md shows none of {notifier.name}'s URL schemes"


@pytest.mark.parametrize("cls", [Notification, DeliveryResult])
def test_every_field_of_the_plugin_api_types_is_documented(cls):
    for field in dataclasses.fields(cls):
        described = f"`{field.name}" in GUIDE
        assert described, f"plugins/README.md does not describe {cls.__name__}.{field.name}"


def test_the_guide_names_the_entry_point_group():
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in GUIDE


def test_the_minimal_plugin_in_the_guide_works_as_shown(http_receiver) -> None:
    import asyncio
    import json
    import re

    from hub.dispatch import send_with_timeout
    from hub.plugin_manager import NotifierRegistry
    from plugins.testing import make_notification

    block = re.search(r"## A minimal plugin\n\n```python\n(.*?)```", GUIDE, flags=re.S)
    assert block is not None
    namespace: dict[str, Any] = {}
    exec(compile(block[1], "plugins/README.md", "exec"), namespace)  # noqa: S102
    hook = namespace["natalia_notifiers"]
    notifiers = hook(settings={"pager": {"endpoint": f"{http_receiver.base_url}/page"}})
    registry = NotifierRegistry(notifiers)
    url = "pager://k3y@4670000000"
    registry.validate(url)
    notifier = namespace["PagerNotifier"]
    assert isinstance(registry.for_url(url), notifier)
    note = make_notification(url=url, short="ALARM short")
    result = asyncio.run(send_with_timeout(registry.for_url(url), note, timeout=5))
    assert result.ok, result.detail
    [request] = http_receiver.requests
    assert request.path == "/page" and request.headers["Authorization"] == "Bearer k3y"
    assert json.loads(request.body) == {"to": "4670000000", "text": "ALARM short"}
