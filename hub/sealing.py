"""Sealing: what reveals where someone is, and secrets, are encrypted at rest in the database.

A :class:`Keyring` holds named AES-256-GCM keys (32 random bytes each); the last one is the
*current* key and seals, every key opens. A sealed value is text that names its key::

    v1:<key id>:<base64 of nonce (12 bytes) || ciphertext || tag (16 bytes)>

so values sealed under an older key keep opening after a rotation. The associated data binds a
value to its column (``alarm.lat``): a value copied into another column does not open.

The columns are SQLAlchemy types (:class:`SealedFloat`, :class:`SealedText`,
:class:`SealedBytes`, used in ``hub.models``): the ORM seals on write and opens on read. Each
engine carries its own keyring (:func:`attach`, done by ``hub.db.make_engine``), so several hubs
with different keys can share a process. An engine without one refuses to read or write these
columns: a position is never stored in clear.

Keys come from ``NATALIA_POSITION_KEYS`` or else the key file (``[storage]
position_keys_file``); both hold entries ``<key id>:<base64 key>``, the current one last. A
keyring read from a file notices when the file changes (``natalia keys rotate``) and takes the
new current key at its next seal; keys it had stay usable until the process ends.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import threading
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Text
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.types import TypeDecorator

from hub.config import ConfigError, StorageConfig

log = logging.getLogger(__name__)

#: The environment variable that holds the keys (it wins over the key file).
KEYS_ENV = "NATALIA_POSITION_KEYS"
VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
_KID = re.compile(r"[A-Za-z0-9_-]{1,32}")
KEY_FILE_HEADER = (
    "# Natalia position keys (hub/sealing.py): AES-256-GCM, one '<id>:<base64 key>' a line.\n"
    "# The last key seals new values; every key listed opens. Secret: keep this file 0600,\n"
    "# back it up apart from the database. Rotate with `natalia keys rotate`.\n"
)


class KeyringError(ConfigError):
    """No keys, an unreadable key file or a malformed key: the message says how to fix it."""


class SealError(ValueError):
    """A stored value does not open: unknown key, tampered, or not sealed at all."""


def new_key_id(taken: Iterable[str] = ()) -> str:
    used = set(taken)
    while (kid := secrets.token_hex(4)) in used:  # pragma: no cover (2**-32)
        pass
    return kid


def format_entry(kid: str, key: bytes) -> str:
    return f"{kid}:{base64.b64encode(key).decode('ascii')}"


def parse_entries(text: str, origin: str) -> dict[str, bytes]:
    """Entries ``<id>:<base64 key>`` separated by newlines, spaces or commas (``#`` comments);
    ``origin`` names where they came from in errors (never the keys themselves)."""
    keys: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        for entry in line.split("#", 1)[0].replace(",", " ").split():
            kid, sep, encoded = entry.partition(":")
            if not sep or not _KID.fullmatch(kid):
                raise KeyringError(f"{origin}, line {number}: expected '<id>:<base64 key>'")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise KeyringError(f"{origin}: key {kid} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise KeyringError(f"{origin}: key {kid} must be {KEY_BYTES} bytes")
            if kid in keys:
                raise KeyringError(f"{origin}: key id {kid} appears twice")
            keys[kid] = key
    if not keys:
        raise KeyringError(f"{origin} holds no key")
    return keys


def _file_signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class Keyring:
    """Named keys; the last one seals. Thread-safe."""

    def __init__(self, keys: Mapping[str, bytes], source: Path | None = None) -> None:
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        self._lock = threading.Lock()
        self._keys = dict(keys)
        self._current = list(keys)[-1]
        self.source = source
        self._signature = _file_signature(source) if source is not None else None

    @classmethod
    def generate(cls) -> Keyring:
        return cls({new_key_id(): secrets.token_bytes(KEY_BYTES)})

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise KeyringError(
                f"position key file {path} not found: create it with `natalia keys init` "
                f"(or set {KEYS_ENV})"
            ) from None
        except OSError as exc:
            raise KeyringError(f"cannot read position key file {path}: {exc.strerror}") from None
        if path.stat().st_mode & 0o077:
            log.warning("position key file %s is readable by others: chmod 600 it", path)
        return cls(parse_entries(text, f"position key file {path}"), source=path)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        value = (os.environ if environ is None else environ).get(KEYS_ENV, "")
        if not value.strip():
            raise KeyringError(
                f"no position keys: {KEYS_ENV} is not set and no key file is configured "
                "([storage] position_keys_file; `natalia init` and `natalia keys init` create one)"
            )
        return cls(parse_entries(value, KEYS_ENV))

    @property
    def current(self) -> str:
        """The id of the key that seals."""
        self._follow_source()
        return self._current

    @property
    def key_ids(self) -> list[str]:
        """Every key id, oldest first; the last is the current one."""
        with self._lock:
            return list(self._keys)

    def entries(self) -> str:
        """The key file's content (secret)."""
        with self._lock:
            return "".join(format_entry(kid, key) + "\n" for kid, key in self._keys.items())

    def with_new_key(self) -> Keyring:
        """A copy with a freshly generated key as the current one."""
        with self._lock:
            keys = dict(self._keys)
        keys[new_key_id(keys)] = secrets.token_bytes(KEY_BYTES)
        return Keyring(keys)

    def without(self, retired: Iterable[str]) -> Keyring:
        """A copy without ``retired`` (never the current key)."""
        drop = set(retired)
        with self._lock:
            if self._current in drop:
                raise KeyringError(f"key {self._current} is the current key: it cannot be retired")
            return Keyring({k: v for k, v in self._keys.items() if k not in drop})

    def seal(self, plain: bytes, purpose: str) -> str:
        kid = self.current
        with self._lock:
            key = self._keys[kid]
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plain, _aad(kid, purpose))
        return f"{VERSION}:{kid}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def open(self, text: str, purpose: str) -> bytes:
        """The plaintext of ``text``; :class:`SealError` names the key id and ``purpose`` only."""
        kid = key_id_of(text)
        if kid is None:
            raise SealError(f"a {purpose} value in the database is not sealed")
        key = self._key(kid)
        if key is None:
            raise SealError(
                f"a {purpose} value is sealed with key {kid}, which is not in the keyring "
                "(the key file or NATALIA_POSITION_KEYS lacks it)"
            )
        try:
            raw = base64.b64decode(text.split(":", 2)[2], validate=True)
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(kid, purpose))
        except (binascii.Error, InvalidTag, ValueError):
            raise SealError(
                f"a {purpose} value sealed with key {kid} failed its integrity check "
                "(altered, or copied from another column)"
            ) from None

    def _key(self, kid: str) -> bytes | None:
        with self._lock:
            key = self._keys.get(kid)
        if key is None and self.source is not None:
            self._follow_source(force=True)  # rotated by another process: take its new key
            with self._lock:
                key = self._keys.get(kid)
        return key

    def _follow_source(self, force: bool = False) -> None:
        """Take the key file's keys when it changed: its current key seals from now on; keys
        this keyring had stay (values sealed with them may still be read)."""
        if self.source is None:
            return
        try:
            signature = _file_signature(self.source)
            if not force and signature == self._signature:
                return
            keys = parse_entries(self.source.read_text(), f"position key file {self.source}")
        except (OSError, KeyringError) as exc:
            with self._lock:
                if self._signature is not None:  # report once per change
                    log.error("position key file unusable (%s); keeping the loaded keys", exc)
                self._signature = None
            return
        with self._lock:
            if signature == self._signature:
                return
            self._keys = {**self._keys, **keys}
            self._current = list(keys)[-1]
            self._signature = signature
        log.info("position keys read again from %s; key %s seals", self.source, self._current)


def _aad(kid: str, purpose: str) -> bytes:
    return f"{VERSION}:{kid}:{purpose}".encode()


def key_id_of(text: str) -> str | None:
    """The key id a stored value names, or None if it is not a sealed value."""
    version, _, rest = text.partition(":")
    kid, sep, _ = rest.partition(":")
    return kid if version == VERSION and sep and _KID.fullmatch(kid) else None


def configured_keyring(storage: StorageConfig) -> Keyring:
    """The keys for this config: ``NATALIA_POSITION_KEYS`` if set, else the key file."""
    if os.environ.get(KEYS_ENV, "").strip() or storage.position_keys_file is None:
        return Keyring.from_environment()
    return Keyring.from_file(storage.position_keys_file)


def write_key_file(path: Path, keyring: Keyring, *, replace: bool) -> None:
    """Write ``keyring`` to ``path`` with mode 0600 (atomically when replacing a file)."""
    content = KEY_FILE_HEADER + keyring.entries()
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(target, path)
    except BaseException:
        if replace:
            target.unlink(missing_ok=True)
        raise


# --- engines and column types -------------------------------------------------------------

_keyrings: weakref.WeakKeyDictionary[Dialect, Keyring] = weakref.WeakKeyDictionary()


def attach(engine: Engine, keyring: Keyring) -> None:
    """Seal and open this engine's sealed columns with ``keyring``."""
    _keyrings[engine.dialect] = keyring


def keyring_of(dialect: Dialect) -> Keyring:
    keyring = _keyrings.get(dialect)
    if keyring is None:
        raise KeyringError("this database engine has no position keys (use hub.db.make_engine)")
    return keyring


class Sealed(TypeDecorator[Any]):
    """Stored as sealed text. ``clear``: values that reveal nothing and are stored as they are,
    so that SQL may compare with them (the empty value, the retention's erased marker)."""

    impl = Text
    cache_ok = True

    def __init__(self, purpose: str, clear: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.purpose = purpose
        self.clear = clear

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, plain: bytes) -> Any:
        raise NotImplementedError

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        plain = self.encode(value)
        text = plain.decode("utf-8", "replace")
        if text in self.clear and text.encode() == plain:
            return text
        return keyring_of(dialect).seal(plain, self.purpose)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value in self.clear:
            return self.decode(str(value).encode())
        return self.decode(keyring_of(dialect).open(str(value), self.purpose))


class SealedFloat(Sealed):
    """A float (coordinates, accuracy), exactly as it was: ``float(repr(x)) == x``."""

    cache_ok = True

    def encode(self, value: Any) -> bytes:
        return repr(float(value)).encode("ascii")

    def decode(self, plain: bytes) -> float:
        return float(plain)


class SealedText(Sealed):
    """Text (messages, keys), as UTF-8."""

    cache_ok = True

    def encode(self, value: Any) -> bytes:
        return str(value).encode("utf-8")

    def decode(self, plain: bytes) -> str:
        return plain.decode("utf-8")


class SealedBytes(Sealed):
    """Raw bytes (refused payloads); the empty payload is stored as it is."""

    cache_ok = True

    def __init__(self, purpose: str, clear: tuple[str, ...] = ("",)) -> None:
        super().__init__(purpose, clear)

    def encode(self, value: Any) -> bytes:
        return bytes(value)

    def decode(self, plain: bytes) -> bytes:
        return plain
