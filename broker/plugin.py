"""Build Natalia's Mosquitto plugin, the retain guard (``retain_guard.c``), for one broker.

Only a device's ``status`` may be retained; Mosquitto's ACL cannot see the retain flag, a
plugin can (see the C file). It is compiled with the system's C compiler against Debian's
``mosquitto-dev`` and ``libmosquitto-dev`` headers (``scripts/ensure-system-deps`` installs
them), once per version of the source: the result is cached per user and copied into the
broker's data dir, whose config loads it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("retain_guard.c")
#: Headers the plugin needs: Debian packages mosquitto-dev and libmosquitto-dev.
HEADERS = ("mosquitto_broker.h", "mosquitto_plugin.h", "mosquitto.h")
INSTALL_HINT = (
    "install a C compiler and Mosquitto's plugin headers (Debian: apt-get install gcc "
    "libc6-dev mosquitto-dev libmosquitto-dev; scripts/ensure-system-deps does it)"
)


class PluginBuildError(RuntimeError):
    """The retain guard could not be compiled; the message says what to install."""


def install_retain_guard(data_dir: Path) -> Path:
    """The plugin's path in ``data_dir``, compiled (or taken from the cache) when missing."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    target = data_dir / f"natalia_retain_guard-{digest}.so"
    if target.exists():
        return target
    built = _cached_build(digest)
    partial = target.with_suffix(".tmp")
    shutil.copyfile(built, partial)
    os.chmod(partial, 0o644)
    os.replace(partial, target)
    for stale in data_dir.glob("natalia_retain_guard-*.so"):
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


def _cached_build(digest: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "natalia"
    built = cache / f"natalia_retain_guard-{digest}.so"
    if built.exists():
        return built
    cache.mkdir(parents=True, exist_ok=True)
    # Compile next to the final name and rename: two brokers starting at once never load a
    # half-written file.
    handle, partial = tempfile.mkstemp(dir=cache, suffix=".so.tmp")
    os.close(handle)
    try:
        _compile(Path(partial))
        os.replace(partial, built)
    finally:
        Path(partial).unlink(missing_ok=True)
    return built


def _compile(output: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise PluginBuildError(f"no C compiler to build the broker's retain guard: {INSTALL_HINT}")
    command = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", str(output)]
    result = subprocess.run([*command, str(SOURCE)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        missing = [name for name in HEADERS if name in result.stderr]
        what = f"headers missing ({', '.join(missing)})" if missing else result.stderr.strip()
        raise PluginBuildError(f"cannot build the broker's retain guard: {what}; {INSTALL_HINT}")
