"""API tokens: random secrets shown once and stored as SHA-256 hashes.

A token is ``nat_`` followed by 43 URL-safe characters (256 random bits); at that length a plain
SHA-256 is a sound hash (no dictionary to guess from). Revoked or expired tokens fail as if
unknown, so a 401 never says which it was.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from sdk.models import ApiRole

PREFIX = "nat_"
#: ``last_used_at`` is written at most this often per token (a read must not always write).
_TOUCH_EVERY = timedelta(minutes=1)


class ApiToken(SQLModel, table=True):
    __tablename__ = "apitoken"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    role: str
    token_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name and role. ``actor`` goes into audit trails."""

    token_id: int
    name: str
    role: ApiRole

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


class TokenError(ValueError):
    pass


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def create_token(
    engine: Engine, name: str, role: ApiRole, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token row and the secret (which is not stored)."""
    now = datetime.now(UTC)
    if expires_at is not None and _utc(expires_at) <= now:
        raise TokenError("expires_at is in the past")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        role=role.value,
        token_hash=_hash(secret),
        prefix=secret[:12],
        created_at=now,
        expires_at=_utc(expires_at) if expires_at else None,
    )
    with Session(engine) as session:
        session.add(row)
        session.commit()
        session.refresh(row)
    return row, secret


def authenticate(session: Session, secret: str, now: datetime | None = None) -> Principal | None:
    """The principal for a valid, unrevoked, unexpired token; None otherwise."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    now = now or datetime.now(UTC)
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == _hash(secret))).first()
    if row is None or row.id is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and _utc(row.expires_at) <= now:
        return None
    if row.last_used_at is None or _utc(row.last_used_at) + _TOUCH_EVERY <= now:
        row.last_used_at = now
        session.add(row)
        session.commit()
    return Principal(row.id, row.name, ApiRole(row.role))


def still_valid(row: ApiToken | None, principal: Principal, now: datetime) -> bool:
    """Whether the token ``principal`` was authenticated with still allows what it did then:
    not revoked, not expired, not deleted, and the same role."""
    if row is None or row.revoked_at is not None or row.role != principal.role.value:
        return False
    return row.expires_at is None or _utc(row.expires_at) > now


def list_tokens(engine: Engine) -> list[ApiToken]:
    with Session(engine) as session:
        return list(session.exec(select(ApiToken).order_by(col(ApiToken.id))))


def revoke_token(engine: Engine, token_id: int) -> ApiToken:
    """Revoke at once: requests fail from now on, open streams end within seconds
    (``hub.api.token_watch``), and the webhooks the token created stop (a stolen admin token
    must not leave a subscription behind that keeps sending alarms to its thief)."""
    from hub.webhooks.subscriptions import deactivate_created_by_token

    with Session(engine) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise TokenError(f"no token {token_id}")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            session.add(row)
            deactivate_created_by_token(session, token_id, row.revoked_at)
            session.commit()
            session.refresh(row)
        return row
