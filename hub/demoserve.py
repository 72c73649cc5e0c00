"""``natalia demo --serve``: after the demo alarm, keep the hub and its API up for the examples.

The API tokens go to an env file readable only by its owner (never to the terminal or a log):
``NATALIA_URL``, ``NATALIA_TOKEN`` (integration role), ``NATALIA_HQ_TOKEN`` (HQ operator) and
``NATALIA_ADMIN_TOKEN``. Source it in another shell and run ``examples/sdk/*.py``.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from sqlalchemy.engine import Engine

from hub.api.tokens import create_token
from sdk.models import ApiRole

ENV_FILE = "api.env"
_VARIABLES = {
    "NATALIA_TOKEN": ApiRole.INTEGRATION,
    "NATALIA_HQ_TOKEN": ApiRole.HQ,
    "NATALIA_ADMIN_TOKEN": ApiRole.ADMIN,
}


def write_env_file(path: Path, engine: Engine, url: str) -> None:
    lines = [f"NATALIA_URL={url}"]
    for variable, role in _VARIABLES.items():
        lines.append(f"{variable}={create_token(engine, f'demo-{role.value}', role)[1]}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def serve_api(workdir: Path, engine: Engine, url: str) -> None:
    """Write the env file, say how to use it, and block until SIGINT or SIGTERM."""
    env_file = workdir / ENV_FILE
    write_env_file(env_file, engine, url)
    print(f"demo: the hub's API is at {url}/v1 (interactive docs: {url}/v1/docs)")
    print(f"demo: API tokens are in {env_file}; in another shell, run the SDK examples with:")
    print(f"  set -a; . {env_file}; set +a")
    print("  .venv/bin/python examples/sdk/fund_request.py")
    print("  .venv/bin/python examples/sdk/defenders_days.py")
    print("demo: serving until Ctrl-C", flush=True)
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("demo: stopping")
