"""Cancel and duress codes: stored as salted PBKDF2 hashes, compared in constant time."""

from __future__ import annotations

import base64
import hashlib
import secrets

_ITERATIONS = 200_000


def hash_code(code: str) -> str:
    if not 4 <= len(code) <= 32:
        raise ValueError("a code must have 4 to 32 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", code.encode(), salt, _ITERATIONS)
    return f"pbkdf2-sha256${_ITERATIONS}${_b64(salt)}${_b64(digest)}"


def code_matches(code: str, hashed: str | None) -> bool:
    if not hashed:
        return False
    try:
        _, iterations, salt, digest = hashed.split("$")
        computed = hashlib.pbkdf2_hmac(
            "sha256", code.encode(), base64.b64decode(salt), int(iterations)
        )
    except ValueError:
        return False
    return secrets.compare_digest(_b64(computed), digest)


def new_token() -> tuple[str, str]:
    """A per-delivery acknowledgement token and the hash the database keeps."""
    token = secrets.token_urlsafe(18)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
