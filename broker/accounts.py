"""Broker accounts: the Mosquitto password file, written without the ``mosquitto_passwd`` tool.

Hashes use Mosquitto 2's ``$7$`` format (PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt), so
the file works with a stock ``mosquitto``. Writes are atomic, locked and mode 0600.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from devicekit.topics import validate_device_id

_ITERATIONS = 101
_SALT_BYTES = 12


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The ``$7$`` hash Mosquitto 2 expects for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (used by tests and ``natalia broker check``)."""
    try:
        _, algorithm, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if algorithm != "7":
        return False
    computed = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return secrets.compare_digest(base64.b64encode(computed).decode(), digest)


def generate_password() -> str:
    """A random password for a new account (shown once, never logged)."""
    return secrets.token_urlsafe(24)


class PasswordFile:
    """The broker's password file. Usernames follow the device-id rules (no ``+``, ``#``, ``/``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def usernames(self) -> list[str]:
        return list(self._read())

    def __contains__(self, username: object) -> bool:
        return username in self._read()

    def set(self, username: str, password: str) -> None:
        """Create or replace the account ``username``."""
        validate_device_id(username)
        with self._locked():
            entries = self._read()
            entries[username] = hash_password(password)
            self._write(entries)

    def remove(self, username: str) -> bool:
        """Delete the account; return whether it existed."""
        with self._locked():
            entries = self._read()
            existed = entries.pop(username, None) is not None
            self._write(entries)
        return existed

    def check(self, username: str, password: str) -> bool:
        hashed = self._read().get(username)
        return hashed is not None and verify_password(password, hashed)

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        entries = {}
        for line in self.path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                username, _, hashed = line.partition(":")
                entries[username] = hashed
        return entries

    def _write(self, entries: dict[str, str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"{user}:{hashed}\n" for user, hashed in sorted(entries.items()))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
