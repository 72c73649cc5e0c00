"""Start and stop a Mosquitto process on the rendered config (used by the CLI, demo and tests)."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from broker.config import BrokerSettings, render

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be started or stopped."""


def find_mosquitto() -> str:
    """Path of the ``mosquitto`` binary, or a clear error saying how to install it."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        raise BrokerError(
            "mosquitto not found: install it with 'apt-get install mosquitto' "
            "(Debian package; .ci/run and 'make setup' do this for you)"
        )
    return found


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_file_limit(settings: BrokerSettings) -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to what the broker needs, within the hard
    limit, so that a ``mosquitto`` exec'd from here inherits it; return the soft limit.

    Warns when the hard limit is too low: the broker could then run out of descriptors before
    its listeners are full, and refuse everyone (set ``LimitNOFILE`` in its service unit).
    """
    target, needed = _set_file_limit(settings, None)
    if target < needed:
        log.warning(
            "the broker needs %d file descriptors but the hard limit allows %d: raise it "
            "(systemd: LimitNOFILE=%d) or lower max_connections",
            needed,
            target,
            needed,
        )
    return target


def _set_file_limit(settings: BrokerSettings, limit: int | None) -> tuple[int, int]:
    """Set the soft ``RLIMIT_NOFILE`` to ``limit`` (or raise it to what ``settings`` need);
    return (the soft limit now, what was asked). Runs in a forked child too: no logging."""
    needed = settings.file_descriptors_needed if limit is None else limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if limit is not None or soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target, needed
    return soft, needed


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class BrokerProcess:
    """One ``mosquitto`` child process. Use as a context manager, or call start()/stop()."""

    def __init__(self, settings: BrokerSettings, file_limit: int | None = None) -> None:
        """``file_limit``: the broker's ``RLIMIT_NOFILE`` (default: what its listeners need)."""
        self.settings = settings
        self.file_limit = file_limit
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def host(self) -> str:
        return self.settings.plain_bind_address

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 10.0) -> BrokerProcess:
        config = render(self.settings)
        settings, limit = self.settings, self.file_limit

        def limit_descriptors() -> None:
            _set_file_limit(settings, limit)

        self._process = subprocess.Popen(
            [find_mosquitto(), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=limit_descriptors,  # runs between fork and exec
        )
        deadline = time.monotonic() + timeout
        while not _accepts_connections(self.host, self.port):
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise BrokerError(f"mosquitto exited at start: {stderr.strip() or self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(f"mosquitto did not listen on port {self.port} in {timeout} s")
            time.sleep(0.02)
        self.settings.pid_file.write_text(f"{self._process.pid}\n")
        return self

    def reload(self) -> None:
        """Re-read the password file and ACL (SIGHUP), e.g. after a device account was added."""
        if self._process is None:
            raise BrokerError("broker is not running")
        self._process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully; Mosquitto writes its persistence snapshot on the way out."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._finish()

    def kill(self) -> None:
        """Stop at once (SIGKILL), losing what arrived since the last persistence snapshot."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._finish()

    def _finish(self) -> None:
        if self._process is not None and self._process.stderr:
            self._process.stderr.close()
        self._process = None
        self.settings.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        path: Path = self.settings.log_file
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def signal_running_broker(settings: BrokerSettings) -> bool:
    """SIGHUP the broker recorded in the data dir's pid file so it reloads accounts.

    Returns False when no broker is running there (it will read the files when it starts).
    """
    try:
        pid = int(settings.pid_file.read_text())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    return True
