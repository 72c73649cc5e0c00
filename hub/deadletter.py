"""A message that no channel of its recipient could deliver: never silent.

The row becomes ``dead``; the alarm (if any) gets a ``dead_letter`` event, the hub's log an error,
and every HQ contact a message saying who was not reached, on which channel and why. That alert
is an ordinary delivery (retries, HQ's own fallback channels) of kind ``dead_letter``; if it dies
too, that is recorded on the alarm and logged, and nobody is alerted about it — a dead letter to
HQ must not re-alert HQ forever.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlmodel import Session

from hub.models import AlarmEvent, Delivery, Role
from hub.outbox import attempts_text, key_exists
from hub.plugin_api import mask_url
from hub.recipients import Target, contacts_with_roles

log = logging.getLogger(__name__)

#: ``Delivery.kind`` of the HQ alert about a dead letter (written in English, not rendered).
DEAD_LETTER_KIND = "dead_letter"
SHORT_LIMIT = 160


#: What a short reference's letter stands for, in ``reference``.
_SUBJECTS = {
    "A": "alarm",
    "R": "rejected message",
    "D": "device event",
    "F": "fund request",
}


def short_reference(row: Delivery) -> str:
    """What the message is about as HQ writes it: ``A12``, ``R3``, ``D7``, ``F5``; ``-`` if none.

    Fund messages have no column of their own: their key names the request (``fund:5:...``).
    """
    if row.alarm_pk is not None:
        return f"A{row.alarm_pk}"
    if row.rejected_pk is not None:
        return f"R{row.rejected_pk}"
    if row.device_event_pk is not None:
        return f"D{row.device_event_pk}"
    prefix, _, rest = row.key.partition(":")
    request_id = rest.partition(":")[0]
    if prefix == "fund" and request_id.isdigit():
        return f"F{request_id}"
    return "-"


def reference(row: Delivery) -> str:
    """What the message was about, for HQ: ``alarm A12``, ``rejected message R3``..."""
    short = short_reference(row)
    subject = _SUBJECTS.get(short[0])
    return f"{subject} {short}" if subject else "no alarm"


def dead_letter(session: Session, row: Delivery, reason: str, now: datetime) -> int:
    """Record ``row`` (already ``dead``) and alert HQ; returns how many HQ alerts were queued."""
    ref = reference(row)
    summary = (
        f"{row.recipient} via {row.channel_masked} ({row.kind} message, {ref}) failed for good "
        f"after {attempts_text(row)}, {reason}: {row.detail}"
    )
    if row.kind == DEAD_LETTER_KIND:
        log.error("HQ alert about a dead letter could not be delivered either: %s", summary)
        _event(session, row, "dead_letter_alert_failed", f"{summary}; HQ not re-alerted", now)
        return 0
    alerts = [
        alert
        for target in contacts_with_roles(session, None, (Role.HQ,))
        if (alert := _queue_alert(session, row, target, ref, now))
    ]
    told = f"HQ alerted ({len(alerts)})" if alerts else "NO HQ contact to alert"
    log.error("dead letter, %s: delivery %s, %s", told, row.id, summary)
    _event(session, row, "dead_letter", f"{summary}; {told}", now)
    return len(alerts)


def _queue_alert(
    session: Session, dead: Delivery, target: Target, ref: str, now: datetime
) -> Delivery | None:
    key = f"dead{dead.id}:{target.key}"
    if key_exists(session, key):
        return None
    title = f"Delivery failed for good: {dead.recipient}"
    body = (
        f"Delivery failed for good: {dead.recipient} via {dead.channel_masked}, {ref} "
        f"({dead.kind} message), after {attempts_text(dead)} on this channel: "
        f"{dead.detail}\n\nNo channel of {dead.recipient} is left: please reach them "
        "another way."
        + (f" Timeline: natalia alarms show A{dead.alarm_pk}" if dead.alarm_pk else "")
    )
    short = f"{title} ({ref}) via {dead.channel_masked}"
    if len(short) > SHORT_LIMIT:
        short = short[: SHORT_LIMIT - 1] + "…"
    url = target.urls[0]
    alert = Delivery(
        key=key,
        alarm_pk=dead.alarm_pk,
        rejected_pk=dead.rejected_pk,
        device_event_pk=dead.device_event_pk,
        contact_id=target.id,
        role=Role.HQ.value,
        kind=DEAD_LETTER_KIND,
        recipient=target.name,
        channel_url=url,
        channel_masked=mask_url(url),
        language="en",
        title=title,
        body=body,
        short=short,
        created_at=now,
        hq_only=dead.hq_only,
    )
    session.add(alert)
    session.flush()
    return alert


def _event(session: Session, row: Delivery, kind: str, detail: str, now: datetime) -> None:
    if row.alarm_pk is not None:
        event = AlarmEvent(
            alarm_pk=row.alarm_pk, at=now, kind=kind, detail=detail[:2000], hq_only=row.hq_only
        )
        session.add(event)


__all__ = ["DEAD_LETTER_KIND", "dead_letter", "reference", "short_reference"]
