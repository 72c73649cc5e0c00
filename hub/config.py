"""The hub's one config file (TOML), validated by pydantic, with secrets overridable from env.

Relative paths in the file are relative to the file's own directory, so a config directory can be
moved as a whole. Environment overrides: ``NATALIA_DATABASE_URL``, ``NATALIA_BROKER_PASSWORD``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from broker.config import HUB_USER


class ConfigError(RuntimeError):
    """The config file is missing or invalid; the message says which key and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(_Section):
    url: str = Field(
        default="sqlite:///natalia.db",
        description="SQLAlchemy URL: sqlite:///file.db or postgresql+psycopg://user@host/db",
    )


class BrokerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = HUB_USER
    password: SecretStr = SecretStr("")
    keepalive_s: int = Field(default=30, ge=5, le=300)
    session_expiry_s: int = Field(
        default=14 * 24 * 3600,
        ge=60,
        description="How long the broker keeps the hub's session and queued alarms.",
    )
    redelivery_delay_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="After a storage failure, reconnect this much later so the broker re-sends.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="The broker's data dir (from `natalia init`); device accounts go here.",
    )
    tls_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Broker TLS listener for devices (password login), e.g. 8883. With a TLS "
        "port the plain listener binds to 127.0.0.1 only; needs `natalia broker ca init`.",
    )
    cert_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Broker TLS listener requiring a client certificate from the broker's CA "
        "and the password, e.g. 8884.",
    )
    tls_bind_address: str = Field(
        default="0.0.0.0",  # noqa: S104 (the TLS listeners face the devices)
        description="Where the TLS listeners bind.",
    )


class HttpConfig(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_url: str | None = Field(
        default=None,
        description="How recipients reach this server (https behind a reverse proxy); "
        "acknowledgement links are sent only when set.",
    )


class TimersConfig(_Section):
    tick_s: float = Field(
        default=1.0, gt=0, le=60, description="How often timers and supervision are checked."
    )


class HealthConfig(_Section):
    file: Path | None = Field(
        default=None,
        description="Rewritten every timer round while the hub is healthy; an external dead-man "
        "check alarms when it goes stale (scripts/deadman-check).",
    )
    stale_after_s: float = Field(default=30, gt=0, description="Unhealthy after this long.")


class RespondersConfig(_Section):
    max_age_s: int = Field(
        default=1800, ge=60, description="Positions older than this are not used."
    )


class RetentionConfig(_Section):
    """How long positions are kept (see hub/retention.py)."""

    positions_days: float = Field(
        default=30,
        gt=0,
        description="Erase positions this long after an alarm closed (and refused payloads and "
        "responders' positions this long after they arrived).",
    )
    run_every_s: float = Field(default=3600, gt=0, description="How often the hub applies it.")


class DeliveryConfig(_Section):
    """Sending, retries and dead letters (see hub/retry.py for the policy)."""

    timeout_s: float = Field(default=15.0, gt=0, le=300, description="Cut-off for one send.")
    max_attempts: int = Field(
        default=5, ge=1, le=100, description="Sends per channel before the next channel."
    )
    backoff_base_s: float = Field(
        default=2.0, gt=0, description="Delay before the first retry (doubles each time)."
    )
    backoff_cap_s: float = Field(default=300.0, gt=0, description="Longest delay between tries.")
    deadline_s: float = Field(
        default=3600.0,
        gt=0,
        description="A message not delivered this long after its first try is dead-lettered "
        "(each fallback channel still gets one try).",
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> DeliveryConfig:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must not be below backoff_base_s")
        return self


class WebhooksConfig(_Section):
    """Outgoing webhooks (hub/api/README.md, "Webhooks"): timeouts, retries, dead deliveries."""

    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Cut-off for one POST.")
    max_attempts: int = Field(
        default=12, ge=1, le=100, description="POSTs of one event before it is dead."
    )
    backoff_base_s: float = Field(
        default=5.0, gt=0, description="Delay before the first retry (doubles each time)."
    )
    backoff_cap_s: float = Field(default=3600.0, gt=0, description="Longest delay between tries.")
    deadline_s: float = Field(
        default=86400.0,
        gt=0,
        description="An event not delivered this long after its first "
        "try is dead (kept, and listed with the webhook's deliveries).",
    )
    concurrency: int = Field(default=16, ge=1, le=256, description="POSTs in flight at most.")

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> WebhooksConfig:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must not be below backoff_base_s")
        return self


class HubConfig(_Section):
    database: DatabaseConfig = DatabaseConfig()
    broker: BrokerConfig = BrokerConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    http: HttpConfig = HttpConfig()
    timers: TimersConfig = TimersConfig()
    responders: RespondersConfig = RespondersConfig()
    health: HealthConfig = HealthConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    retention: RetentionConfig = RetentionConfig()
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-plugin settings tables, e.g. [plugins.facebook]."
    )
    load_entry_points: bool = Field(
        default=True, description="Load third-party plugins from the natalia.plugins entry points."
    )


def load_config(path: Path) -> HubConfig:
    """Read, resolve and validate the config file at ``path``."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: create one with `natalia init`") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return config_from_mapping(raw, base_dir=path.parent)


def config_from_mapping(raw: dict[str, Any], base_dir: Path) -> HubConfig:
    """Validate a config mapping; paths and SQLite URLs become absolute under ``base_dir``."""
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    database = raw.setdefault("database", {})
    if env_url := os.environ.get("NATALIA_DATABASE_URL"):
        database["url"] = env_url
    broker = raw.setdefault("broker", {})
    if env_password := os.environ.get("NATALIA_BROKER_PASSWORD"):
        broker["password"] = env_password
    try:
        config = HubConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ConfigError(f"invalid hub config: {problems}") from None
    config.database.url = _absolute_sqlite_url(config.database.url, base_dir)
    if config.broker.data_dir is not None and not config.broker.data_dir.is_absolute():
        config.broker.data_dir = (base_dir / config.broker.data_dir).resolve()
    if config.health.file is not None and not config.health.file.is_absolute():
        config.health.file = (base_dir / config.health.file).resolve()
    return config


def _absolute_sqlite_url(url: str, base_dir: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base_dir / url[len(prefix) :]).resolve())
    return url
