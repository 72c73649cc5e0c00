"""``natalia init``: a ready-to-run directory with the hub config, broker config and accounts."""

from __future__ import annotations

import os
from pathlib import Path

from broker.accounts import PasswordFile, generate_password
from broker.config import HUB_USER, BrokerSettings, render
from hub.sealing import Keyring, write_key_file

CONFIG_TEMPLATE = """\
# Natalia hub configuration. Secrets may instead come from the environment:
# NATALIA_BROKER_PASSWORD, NATALIA_DATABASE_URL, NATALIA_POSITION_KEYS.

[database]
# SQLite (WAL, full fsync) for one machine; PostgreSQL for production and several hubs:
# url = "postgresql+psycopg://natalia@127.0.0.1/natalia"
url = "sqlite:///natalia.db"

[broker]
host = "127.0.0.1"
port = {port}
username = "{hub_user}"
password = "{password}"
data_dir = "broker"
# TLS for devices (broker/README.md): `natalia broker ca init`, `natalia broker cert server
# --host NAME`, then uncomment. With a TLS port the plain port above binds to 127.0.0.1 only.
# tls_port = 8883     # TLS, password login
# cert_port = 8884    # TLS, client certificate from the broker's CA and password

[delivery]
timeout_s = 15        # cut-off for one send
max_attempts = 5      # per channel, for transient failures (5xx, timeouts, network)
backoff_base_s = 2    # waits double from here, with jitter ...
backoff_cap_s = 300   # ... up to this
deadline_s = 3600     # undelivered after this: dead letter, HQ alerted

[http]
# Serves the API (/v1, see hub/api/README.md) and the "I'm on it" links in messages. Put it
# behind an HTTPS reverse proxy and set public_url to the address recipients open; links are
# sent only when it is set. API tokens: `natalia token create NAME --role ROLE`.
enabled = true
host = "127.0.0.1"
port = {http_port}
public_url = "http://127.0.0.1:{http_port}"
ack_link_grace_s = 86400   # a link says "closed" this long after its alarm closed, then dies

[webhooks]
# Signed POSTs to partner systems, subscribed with the API (POST /v1/webhooks, admin role).
timeout_s = 10        # cut-off for one POST
max_attempts = 12     # then the delivery is kept as dead (GET /v1/webhooks/ID/deliveries)
backoff_base_s = 5    # waits double from here, with jitter ...
backoff_cap_s = 3600  # ... up to this
deadline_s = 86400    # a day at most per event

[admission]
# What one broker account (a wristband, a responder's phone) may cost the hub. Alarms and
# cancels are never limited; other messages beyond these are counted, not stored.
account_rate_per_s = 1    # telemetry per second on average ...
account_burst = 60        # ... and at once
refusal_interval_s = 60   # refused messages: one report to HQ per account and interval
refusals_kept_whole = 3   # payloads kept whole per account and flood; the rest are counted

[storage]
# Positions, the messages and payloads that carry them and device keys are encrypted in the
# database with these keys (SECURITY.md, "Encryption at rest"). The file is secret: mode 0600,
# backed up apart from the database. `natalia keys rotate` replaces the key.
position_keys_file = "position.keys"

[retention]
positions_days = 30   # closed alarms' positions, the messages that carried them, webhook
                      # bodies, refused payloads and responders' positions are erased after
                      # this many days (`natalia retention run` does it at once)

[security]
# Channel and webhook URLs may not point at loopback, private, link-local or reserved addresses
# (or at this hub), checked again on every connection; list the internal networks allowed:
# allowed_networks = ["10.1.2.0/24"]   # e.g. an internal mail relay

[timers]
tick_s = 1            # how often escalation timers and silent devices are checked

[health]
file = "hub.alive"    # rewritten while healthy; watch it with scripts/deadman-check
stale_after_s = 30
max_unacked_age_s = 60   # unhealthy when a message waits longer for the hub to take it

[responders]
max_age_s = 1800      # responders' positions older than this are not used

# Settings for notifier plugins, one table per plugin:
# [plugins.apprise]
# timeout = 10            # connect/read timeout of one send, below [delivery] timeout_s
# max_workers = 64        # sends in flight at once
# exclude_schemes = []    # schemes left to another plugin, e.g. ["signal"]
# [plugins.console]
# file = "/var/lib/natalia/console.out"  # console:// writes here (0600), never into the log
# [plugins.facebook]
# graph_url = "https://graph.facebook.com/v21.0"
# timeout = 10
"""


def init_directory(directory: Path, port: int = 1883, http_port: int = 8080) -> Path:
    """Create ``hub.toml``, ``position.keys`` and ``broker/`` in ``directory``; refuse to
    overwrite a config (a key file already there is kept: it may seal a database)."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "hub.toml"
    if config_path.exists():
        raise FileExistsError(f"{config_path} exists; remove it or choose another directory")
    settings = BrokerSettings(data_dir=directory / "broker", port=port)
    render(settings)
    password = generate_password()
    PasswordFile(settings.password_file).set(HUB_USER, password)
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            CONFIG_TEMPLATE.format(
                port=port, hub_user=HUB_USER, password=password, http_port=http_port
            )
        )
    keys_file = directory / "position.keys"
    if not keys_file.exists():
        write_key_file(keys_file, Keyring.generate(), replace=False)
    return config_path


def broker_settings(
    data_dir: Path,
    port: int,
    log_to_stdout: bool = False,
    *,
    tls_port: int | None = None,
    cert_port: int | None = None,
    tls_bind_address: str = "0.0.0.0",  # noqa: S104 (the TLS listeners face the devices)
    max_connections: int = 1000,
) -> BrokerSettings:
    return BrokerSettings(
        data_dir=data_dir,
        port=port,
        log_to_stdout=log_to_stdout,
        tls_port=tls_port,
        cert_port=cert_port,
        tls_bind_address=tls_bind_address,
        max_connections=max_connections,
    )


def allow_loopback(config_path: Path) -> None:
    """Let a hub made by :func:`init_directory` reach receivers on this machine (the demo's, the
    benchmarks', the fault scenarios'): 127.0.0.0/8 in [security] allowed_networks, which is
    refused by default (hub/egress.py)."""
    text = config_path.read_text()
    example = '# allowed_networks = ["10.1.2.0/24"]'
    assert example in text, "the hub.toml template lost its [security] example"
    config_path.write_text(text.replace(example, 'allowed_networks = ["127.0.0.0/8"]', 1))
