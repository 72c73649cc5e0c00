"""The hub config file: defaults, relative paths, env overrides and readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    return path


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[database]\nurl = "sqlite:///a.db"\n[broker]\ndata_dir = "broker"\n')
    )
    assert config.database.url == f"sqlite:///{tmp_path / 'a.db'}"
    assert config.broker.data_dir == tmp_path / "broker"


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NATALIA_BROKER_PASSWORD", "from-env")
    monkeypatch.setenv("NATALIA_DATABASE_URL", "postgresql+psycopg://u@h/db")
    config = load_config(write(tmp_path, '[broker]\npassword = "in-file"\n'))
    assert config.broker.password.get_secret_value() == "from-env"
    assert config.database.url == "postgresql+psycopg://u@h/db"
    assert "from-env" not in repr(config)


def test_unknown_key_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"broker\.prot: Extra inputs are not permitted"):
        load_config(write(tmp_path, "[broker]\nprot = 1883\n"))


def test_bad_toml_and_missing_file_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[broker\n"))
    with pytest.raises(ConfigError, match="natalia init"):
        load_config(tmp_path / "missing.toml")
