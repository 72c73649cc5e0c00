"""The hub's one config file (TOML), validated by pydantic, with secrets overridable from env.

Relative paths in the file are relative to the file's own directory, so a config directory can be
moved as a whole. Environment overrides: ``NATALIA_DATABASE_URL``, ``NATALIA_BROKER_PASSWORD``,
``NATALIA_POSITION_KEYS`` (hub/sealing.py).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from broker.config import HUB_USER
from hub.egress import EgressPolicy


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
    max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Connections each broker listener facing devices and phones takes (the "
        "rest are refused); size it to the fleet. The broker's descriptor limit must allow "
        'all listeners full (broker/README.md, "Connections").',
    )
    tls_bind_address: str = Field(
        default="0.0.0.0",  # noqa: S104 (the TLS listeners face the devices)
        # Rendered into mosquitto.conf: no spaces or line breaks that could add a directive.
        pattern=r"^[A-Za-z0-9.:_\[\]-]+$",
        description="Where the TLS listeners bind.",
    )
    tls: bool = Field(
        default=False,
        description="The hub itself connects to host:port over TLS (set port to the broker's "
        "TLS port): needed when the broker runs on another machine, or the hub's password "
        "travels in clear.",
    )
    ca_file: Path | None = Field(
        default=None,
        description="CA certificate(s) the hub verifies the broker with (PEM); default: the "
        "broker's private CA in <data_dir>/pki/ca.crt when it exists, else the system CAs.",
    )

    @model_validator(mode="after")
    def _tls_needs_a_port(self) -> BrokerConfig:
        if self.tls and self.tls_port is None:
            raise ValueError("tls = true needs tls_port: the broker's TLS listener the hub uses")
        return self

    @property
    def connect_port(self) -> int:
        """The port the hub connects to: ``tls_port`` with ``tls``, else the plain ``port``."""
        if self.tls and self.tls_port is not None:
            return self.tls_port
        return self.port

    @property
    def trusted_ca_file(self) -> Path | None:
        """``ca_file``, else the broker's private CA when it exists (None: the system CAs)."""
        if self.ca_file is not None:
            return self.ca_file
        if self.data_dir is not None and (self.data_dir / "pki" / "ca.crt").exists():
            return self.data_dir / "pki" / "ca.crt"
        return None


class HttpConfig(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    public_url: str | None = Field(
        default=None,
        description="How recipients reach this server (https behind a reverse proxy); "
        "acknowledgement links are sent only when set.",
    )
    ack_link_grace_s: float = Field(
        default=86400,
        ge=0,
        description="An acknowledgement link says 'closed' this long after its alarm closed, "
        "then stops working.",
    )
    ack_link_misses: int = Field(
        default=20,
        ge=1,
        description="Links that do not work one client address may open per "
        "ack_link_misses_window_s before it gets 429.",
    )
    ack_link_misses_window_s: float = Field(default=600, gt=0)


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
    max_unacked_age_s: float = Field(
        default=60,
        gt=0,
        description="Unhealthy when a message received from the broker has waited longer than "
        "this for its acknowledgement (the hub is not taking messages).",
    )


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


class StorageConfig(_Section):
    """Encryption at rest of positions and secrets in the database (hub/sealing.py)."""

    position_keys_file: Path | None = Field(
        default=Path("position.keys"),
        description="The keys that seal positions, secret, mode 0600 (`natalia init` and "
        "`natalia keys init` create it); NATALIA_POSITION_KEYS, when set, is used instead.",
    )


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


class SecurityConfig(_Section):
    """Checks on device messages (see hub/authenticity.py and devicekit/PROTOCOL.md 5.5), and
    where the hub may connect on someone's behalf (hub/egress.py)."""

    allowed_networks: list[str] = Field(
        default_factory=list,
        description="Internal networks (CIDR) that channel and webhook URLs may reach, e.g. "
        '["10.1.2.0/24"] for an internal mail relay; loopback, private, link-local and '
        "reserved addresses are refused otherwise.",
    )
    clock_tolerance_s: float = Field(
        default=300,
        gt=0,
        description="An alarm whose device time is further than this from the hub's clock is "
        "accepted but flagged late on its timeline.",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for text in networks:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not a network like 10.1.2.0/24") from None
        return networks


class AdmissionConfig(_Section):
    """What one broker account (a wristband, a responder's phone) may cost the hub; alarms and
    cancels are never limited (see hub/admission.py)."""

    account_rate_per_s: float = Field(
        default=1.0,
        gt=0,
        description="Telemetry (heartbeats, locations, status, OwnTracks positions) one account "
        "may send per second on average; beyond it messages are refused for their rate.",
    )
    account_burst: int = Field(
        default=60, ge=1, description="Telemetry messages one account may send at once."
    )
    refusal_interval_s: float = Field(
        default=60,
        gt=0,
        le=3600,
        description="HQ gets at most one report per account per interval about refused "
        "messages (the first after a quiet time at once, then a summary).",
    )
    refusals_kept_whole: int = Field(
        default=3,
        ge=1,
        description="Refused payloads kept whole per account and flood; the rest are counted "
        "with their reasons and sizes.",
    )


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
    security: SecurityConfig = SecurityConfig()
    admission: AdmissionConfig = AdmissionConfig()
    storage: StorageConfig = StorageConfig()
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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc.reason}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests arrays or tables too deeply") from None
    return config_from_mapping(raw, base_dir=path.parent)


def config_from_mapping(raw: dict[str, Any], base_dir: Path) -> HubConfig:
    """Validate a config mapping; paths and SQLite URLs become absolute under ``base_dir``."""
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    # A section that is not a table is left as it is: validation names it.
    database = raw.setdefault("database", {})
    if (env_url := os.environ.get("NATALIA_DATABASE_URL")) and isinstance(database, dict):
        database["url"] = env_url
    broker = raw.setdefault("broker", {})
    if (env_password := os.environ.get("NATALIA_BROKER_PASSWORD")) and isinstance(broker, dict):
        broker["password"] = env_password
    try:
        config = HubConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ConfigError(f"invalid hub config: {problems}") from None
    try:
        _resolve_paths(config, base_dir)
    except ValueError as exc:  # e.g. a NUL character in a path
        raise ConfigError(f"invalid path in hub config: {exc}") from None
    return config


def _resolve_paths(config: HubConfig, base_dir: Path) -> None:
    config.database.url = _absolute_sqlite_url(config.database.url, base_dir)
    if config.broker.data_dir is not None and not config.broker.data_dir.is_absolute():
        config.broker.data_dir = (base_dir / config.broker.data_dir).resolve()
    if config.broker.ca_file is not None and not config.broker.ca_file.is_absolute():
        config.broker.ca_file = (base_dir / config.broker.ca_file).resolve()
    if config.health.file is not None and not config.health.file.is_absolute():
        config.health.file = (base_dir / config.health.file).resolve()
    keys_file = config.storage.position_keys_file
    if keys_file is not None and not keys_file.is_absolute():
        config.storage.position_keys_file = (base_dir / keys_file).resolve()


def _absolute_sqlite_url(url: str, base_dir: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base_dir / url[len(prefix) :]).resolve())
    return url


def egress_policy(config: HubConfig) -> EgressPolicy:
    """Where this hub may connect on someone's behalf (hub/egress.py): the allowed internal
    networks, never its own web server."""
    from urllib.parse import urlsplit

    own = [(config.http.host, config.http.port)]
    if config.http.public_url:
        public = urlsplit(config.http.public_url)
        if public.hostname:
            default = 443 if public.scheme == "https" else 80
            own.append((public.hostname, public.port or default))
    return EgressPolicy.from_settings(config.security.allowed_networks, own)
