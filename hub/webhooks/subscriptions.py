"""Creating and deleting webhook subscriptions, and which events each one wants.

Event filters are exact types or shell-style patterns matched with ``fnmatch`` rules (case
sensitive): ``"alarm.acknowledged"``, ``"alarm.*"``, ``"*"``. A filter that could match no
source's events (``"alarms.*"``) is refused, so a typo does not silently receive nothing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import datetime
from fnmatch import fnmatchcase

import httpx
from sqlmodel import Session, col, select, update

from hub.webhooks.sources import SOURCES, source_names
from hub.webhooks.tables import CLAIMABLE, WebhookCursor, WebhookDelivery, WebhookDeliveryStatus
from hub.webhooks.tables import WebhookSubscription as Subscription

SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, so a leaked secret is recognised)
MAX_PATTERNS = 50
_PATTERN = re.compile(r"[A-Za-z0-9_.*?-]{1,100}")


class WebhookError(ValueError):
    """A subscription that cannot be created as asked; the message says what to change."""


def matches(patterns: Iterable[str], event_type: str) -> bool:
    return any(fnmatchcase(event_type, pattern) for pattern in patterns)


def check_patterns(patterns: list[str]) -> list[str]:
    """The filters, stripped and without repeats; :class:`WebhookError` when one is wrong."""
    if not patterns:
        raise WebhookError('events: name at least one event type or pattern, e.g. "alarm.*"')
    if len(patterns) > MAX_PATTERNS:
        raise WebhookError(f"events: at most {MAX_PATTERNS} types or patterns")
    names = source_names()
    found: list[str] = []
    for raw in patterns:
        pattern = raw.strip()
        if not _PATTERN.fullmatch(pattern):
            raise WebhookError(
                f"events: {raw!r} is not an event type or pattern (letters, digits, _ . - * ?)"
            )
        head = pattern.split(".", 1)[0]
        if not any(wildcard in head for wildcard in "*?") and head not in names:
            raise WebhookError(
                f"events: {pattern!r} matches no event; types start with "
                + ", ".join(f'"{name}."' for name in names)
            )
        if pattern not in found:
            found.append(pattern)
    return found


def check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise WebhookError("url: not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookError("url: must be an http:// or https:// URL with a host")
    return url


def create(
    session: Session,
    url: str,
    events: list[str],
    description: str,
    created_by: str,
    token_id: int | None = None,
) -> tuple[Subscription, str]:
    """A new subscription and its secret. It starts at the current end of every source: it
    gets the events from now on, not the history. ``token_id``: the API token creating it."""
    row = Subscription(
        url=check_url(url),
        secret=SECRET_PREFIX + secrets.token_urlsafe(32),
        events=check_patterns(events),
        description=description,
        created_by=created_by,
        created_by_token=token_id,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    for source in SOURCES:
        session.add(
            WebhookCursor(webhook_id=row.id, source=source.name, position=source.latest(session))
        )
    session.commit()
    session.refresh(row)
    return row, row.secret


def deactivate(session: Session, row: Subscription, reason: str, now: datetime) -> int:
    """Stop the subscription; its deliveries still waiting are cancelled (returns how many).
    The caller commits. A send under way finishes, and is recorded."""
    if row.active:
        row.active = False
        row.deactivated_at = now
        row.deactivated_reason = reason[:500]
        session.add(row)
    result = session.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.webhook_id) == row.id, col(WebhookDelivery.status).in_(CLAIMABLE)
        )
        .values(
            status=WebhookDeliveryStatus.CANCELLED.value,
            next_try_at=None,
            detail=f"cancelled: {reason}"[:1000],
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def deactivate_created_by_token(session: Session, token_id: int, now: datetime) -> int:
    """Stop every active subscription the token created (it is being revoked); the caller
    commits. Returns how many."""
    rows = session.exec(
        select(Subscription).where(
            Subscription.created_by_token == token_id, col(Subscription.active)
        )
    ).all()
    for row in rows:
        deactivate(session, row, f"the API token {token_id} that created it was revoked", now)
    return len(rows)
