"""Property-based tests of the hub's config file (hub/config.py) and of the Mosquitto config the
hub renders from it (broker/config.py).

Any file gives a ``HubConfig`` or a ``ConfigError`` naming the problem, never a raw traceback of
another type; and whatever config is accepted renders a mosquitto.conf with exactly the
template's directives: no value can smuggle in a line (``allow_anonymous true``...).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st

from broker.config import BrokerConfigError, BrokerSettings, render
from hub.config import ConfigError, HubConfig, load_config
from hub.setup import broker_settings
from tests.support.hypothesis import fuzz

SECTIONS = {
    name: list(field.annotation.model_fields)
    for name, field in HubConfig.model_fields.items()
    if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields")
}

# -- a small TOML writer (tomllib only reads) -----------------------------------------------------


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(document: dict[str, Any]) -> str:
    lines = [
        f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items() if not isinstance(v, dict)
    ]
    for name, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# -- generated documents -----------------------------------------------------------------------

text_values = st.text(max_size=30) | st.sampled_from(
    [
        "127.0.0.1",
        "0.0.0.0\nallow_anonymous true",
        "x # comment",
        "sqlite:///natalia.db",
        "sqlite:///\x00.db",
        "postgresql+psycopg://u@h/db",
        "a/../../b",
        "\x00",
        "/" * 5000,
        "x" * 5000,
        "pki",
    ]
)
scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=0, max_value=70_000)
    | st.floats()
    | text_values
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(SECTIONS)) | st.text(max_size=8), max_size=5))
    document: dict[str, Any] = {}
    for name in names:
        keys = SECTIONS.get(name, [])
        chosen = draw(st.lists(st.sampled_from(keys) if keys else st.text(max_size=8), max_size=5))
        chosen += draw(st.lists(st.text(max_size=8), max_size=1))
        document[name] = {key: draw(values) for key in chosen}
    if draw(st.booleans()):
        document["load_entry_points"] = draw(values)
    return document


environments = st.fixed_dictionaries(
    {},
    optional={
        "NATALIA_DATABASE_URL": text_values.filter(lambda v: "\x00" not in v),
        "NATALIA_BROKER_PASSWORD": text_values.filter(lambda v: "\x00" not in v),
    },
)


def config_or_config_error(path: Path, environment: dict[str, str]) -> HubConfig | None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NATALIA_")}
    with mock.patch.dict(os.environ, {**clean, **environment}, clear=True):
        try:
            return load_config(path)
        except ConfigError as exc:
            assert str(exc).strip()
            return None


def assert_renders_only_the_templates_directives(config: HubConfig, data_dir: Path) -> None:
    """The rendered config has the template's directives, each once per listener, no more."""
    settings = broker_settings(
        data_dir,
        config.broker.port,
        tls_port=config.broker.tls_port,
        cert_port=config.broker.cert_port,
        tls_bind_address=config.broker.tls_bind_address,
    )
    assert_renders_only_the_templates_directives_for(settings)


def assert_renders_only_the_templates_directives_for(settings: BrokerSettings) -> None:
    pki = settings.pki_dir
    pki.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "server.crt", "server.key", "crl.pem"):
        (pki / name).touch()
    lines = [
        line.split()[0]
        for line in render(settings).read_text().split("\n")  # as Mosquitto reads it
        if line.strip() and not line.startswith("#")
    ]
    listeners = 1 + (settings.tls_port is not None) + (settings.cert_port is not None)
    assert lines.count("listener") == listeners, lines
    assert lines.count("allow_anonymous") == 1 and lines.count("password_file") == 1, lines
    assert lines.count("use_username_as_clientid") == listeners, lines
    expected_tls = {
        "cafile",
        "certfile",
        "keyfile",
        "crlfile",
        "tls_version",
        "require_certificate",
    }
    assert {line for line in lines if line in expected_tls} <= expected_tls
    assert all(re.fullmatch(r"[a-z0-9_]+", directive) for directive in lines), lines


@fuzz()
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
@example(text="a = " + "[" * 5000)
@example(text="a = " + "{b = " * 2000)
@example(text="[database]\nurl = 'sqlite:///\x00'")
def test_any_text_gives_a_config_or_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    config_or_config_error(path, {})


@fuzz(weight=0.5)
@given(raw=st.binary(max_size=200))
@example(raw=b"a = '\xff'")
@example(raw=b"\xef\xbb\xbf[database]\n")
def test_any_bytes_give_a_config_or_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "hub.toml"
    path.write_bytes(raw)
    config_or_config_error(path, {})


@fuzz(weight=2)
@given(document=documents(), environment=environments)
@example(document={"database": {"url": "sqlite:///\x00"}}, environment={})
@example(document={"broker": {"data_dir": "\x00"}}, environment={})
@example(document={"database": 1}, environment={"NATALIA_DATABASE_URL": "sqlite:///x.db"})
@example(document={"broker": "x"}, environment={"NATALIA_BROKER_PASSWORD": "pw"})
@example(
    document={"broker": {"tls_port": 8883, "tls_bind_address": "0.0.0.0\nallow_anonymous true"}},
    environment={},
)
@example(document={"broker": {"port": 1883, "host": "h\nlistener 1 0.0.0.0"}}, environment={})
def test_generated_documents_give_a_config_or_a_config_error(
    tmp_path: Path, document: dict[str, Any], environment: dict[str, str]
) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(toml_document(document), encoding="utf-8", errors="surrogatepass")
    config = config_or_config_error(path, environment)
    if config is not None:
        assert_renders_only_the_templates_directives(config, tmp_path / "broker")


def test_a_document_with_every_listener_is_accepted_and_renders(tmp_path: Path) -> None:
    document = {
        "database": {"url": "sqlite:///natalia.db"},
        "broker": {"port": 1883, "tls_port": 8883, "cert_port": 8884, "tls_bind_address": "::"},
    }
    path = tmp_path / "hub.toml"
    path.write_text(toml_document(document))
    config = config_or_config_error(path, {})
    assert config is not None and config.broker.cert_port == 8884
    assert_renders_only_the_templates_directives(config, tmp_path / "broker")


@fuzz()
@given(
    address=st.text(max_size=30) | st.just("0.0.0.0\nallow_anonymous true"),
    directory=st.text(max_size=12) | st.just("b\nallow_anonymous true\n#"),
    tls=st.booleans(),
)
def test_broker_settings_render_the_templates_directives_or_are_refused(
    tmp_path: Path, address: str, directory: str, tls: bool
) -> None:
    name = directory.replace("/", "_").replace("\x00", "_").lstrip(".") or "b"
    settings = BrokerSettings(
        data_dir=tmp_path / "b" / name,
        bind_address=address,
        tls_bind_address=address,
        tls_port=8883 if tls else None,
    )
    try:
        assert_renders_only_the_templates_directives_for(settings)
    except BrokerConfigError as exc:
        assert "line break" in str(exc)
