"""Retention: positions are kept only as long as they can help.

A closed alarm's position, the messages that carried its position and track (delivery bodies),
the raw payloads of refused messages and responders' last positions are erased once older than
``[retention] positions_days``. What happened stays: the alarm, its timeline, who was told and
when. The hub runs this every ``run_every_s``; ``natalia retention run`` runs it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hub.models import ERASED as ERASED  # defined with the tables: stored in clear (sealing.py)
from hub.models import OPEN_STATUSES, Alarm, Delivery, RejectedMessage, Responder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    alarms: int
    deliveries: int
    rejected: int
    responders: int

    def __str__(self) -> str:
        return (
            f"positions erased: {self.alarms} alarms, {self.deliveries} messages, "
            f"{self.rejected} refused payloads, {self.responders} responders"
        )


def apply_retention(engine: Engine, now: datetime, max_age: timedelta) -> RetentionResult:
    """Erase what is older than ``max_age`` at ``now``, in one transaction."""
    cutoff = now - max_age
    with Session(engine) as session:
        connection = session.connection()
        closed = select(Alarm.id).where(
            col(Alarm.closed_at).is_not(None),
            col(Alarm.closed_at) < cutoff,
        )
        alarms = connection.execute(
            update(Alarm)
            .where(col(Alarm.id).in_(closed), col(Alarm.lat).is_not(None))
            .values(lat=None, lon=None, accuracy_m=None, fix_ts=None)
        ).rowcount
        deliveries = connection.execute(
            update(Delivery)
            .where(
                col(Delivery.alarm_pk).in_(closed),
                col(Delivery.status).not_in(OPEN_STATUSES),
                col(Delivery.body) != ERASED,
            )
            .values(body=ERASED, short=ERASED)
        ).rowcount
        rejected = connection.execute(
            update(RejectedMessage)
            .where(col(RejectedMessage.received_at) < cutoff, col(RejectedMessage.payload) != b"")
            .values(payload=b"")
        ).rowcount
        responders = connection.execute(
            update(Responder)
            .where(col(Responder.position_at) < cutoff, col(Responder.lat).is_not(None))
            .values(lat=None, lon=None, accuracy_m=None)
        ).rowcount
        session.commit()
    result = RetentionResult(alarms, deliveries, rejected, responders)
    if alarms or deliveries or rejected or responders:
        log.info("retention: %s", result)
    return result
