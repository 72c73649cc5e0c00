"""Retention: positions are kept only as long as they can help.

Every table that can hold a position is covered (``RETAINED`` lists them, and a test checks the
list against every sealed column): a closed alarm's position; the messages that carried a
position or a track (delivery bodies — about an alarm once it has been closed for the period,
about anything else once they are that old); the bodies of webhook POSTs (alarm events carry
positions); the raw payloads of refused messages; responders' last positions. They are erased
once older than ``[retention] positions_days``. What is still to be sent is never erased. What
happened stays: the alarm, its timeline, who was told and when. A duress alarm's position goes
from the sight of those outside HQ when a really cancelled alarm's would be erased
(``Alarm.outside_position_erased``); HQ keeps it until the alarm really closes. The hub runs
this every ``run_every_s``; ``natalia retention run`` runs it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, not_, or_, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from hub.models import ERASED as ERASED  # defined with the tables: stored in clear (sealing.py)
from hub.models import OPEN_STATUSES, Alarm, Delivery, RejectedMessage, Responder
from hub.webhooks.tables import CLAIMABLE as WEBHOOK_CLAIMABLE
from hub.webhooks.tables import WebhookDelivery, WebhookDeliveryStatus

log = logging.getLogger(__name__)

#: Every sealed column that holds a position, or a message or payload that may carry one, and
#: what erases it. Secrets (device keys, webhook secrets) are sealed too but are not positions.
RETAINED = {
    "alarm.lat": "alarms",
    "alarm.lon": "alarms",
    "alarm.accuracy_m": "alarms",
    "delivery.body": "deliveries",
    "delivery.short": "deliveries",
    "webhookdelivery.body": "webhook_bodies",
    "rejectedmessage.payload": "rejected",
    "responder.lat": "responders",
    "responder.lon": "responders",
    "responder.accuracy_m": "responders",
}


@dataclass(frozen=True)
class RetentionResult:
    alarms: int
    deliveries: int
    rejected: int
    responders: int
    webhook_bodies: int = 0

    def __str__(self) -> str:
        return (
            f"positions erased: {self.alarms} alarms, {self.deliveries} messages, "
            f"{self.webhook_bodies} webhook bodies, {self.rejected} refused payloads, "
            f"{self.responders} responders"
        )

    @property
    def erased(self) -> int:
        return self.alarms + self.deliveries + self.webhook_bodies + self.rejected + self.responders


def apply_retention(engine: Engine, now: datetime, max_age: timedelta) -> RetentionResult:
    """Erase what is older than ``max_age`` at ``now``, in one transaction."""
    cutoff = now - max_age
    with Session(engine) as session:
        connection = session.connection()
        result = RetentionResult(
            alarms=_alarms(connection, cutoff),
            deliveries=_deliveries(connection, cutoff),
            rejected=_rejected(connection, cutoff),
            responders=_responders(connection, cutoff),
            webhook_bodies=_webhook_bodies(connection, cutoff),
        )
        session.commit()
    if result.erased:
        log.info("retention: %s", result)
    return result


def _closed_before(cutoff: datetime) -> SelectOfScalar[int | None]:
    """Ids of the alarms closed before ``cutoff``."""
    closed = col(Alarm.closed_at)
    return select(col(Alarm.id)).where(closed.is_not(None), closed < cutoff)


def _alarms(connection: Connection, cutoff: datetime) -> int:
    # Outside HQ a duress alarm closed when the code came (hub.disclosure): its position goes
    # from their sight in the same run as a really cancelled alarm's would, never later.
    connection.execute(
        update(Alarm)
        .where(
            col(Alarm.duress),
            col(Alarm.duress_at) < cutoff,
            not_(col(Alarm.outside_position_erased)),
        )
        .values(outside_position_erased=True)
    )
    return connection.execute(
        update(Alarm)
        .where(col(Alarm.id).in_(_closed_before(cutoff)), col(Alarm.lat).is_not(None))
        .values(lat=None, lon=None, accuracy_m=None, fix_ts=None)
    ).rowcount


def _deliveries(connection: Connection, cutoff: datetime) -> int:
    """Messages about an alarm closed before the cutoff, or about no alarm (a device's report,
    a fund request, an announcement) and older than it; never one still to be sent."""
    about_old_alarm = col(Delivery.alarm_pk).in_(_closed_before(cutoff))
    old_without_alarm = and_(col(Delivery.alarm_pk).is_(None), col(Delivery.created_at) < cutoff)
    return connection.execute(
        update(Delivery)
        .where(
            or_(about_old_alarm, old_without_alarm),
            col(Delivery.status).not_in(OPEN_STATUSES),
            col(Delivery.body) != ERASED,
        )
        .values(body=ERASED, short=ERASED)
    ).rowcount


def _webhook_bodies(connection: Connection, cutoff: datetime) -> int:
    """POSTed event bodies (an alarm event carries its position) older than the cutoff, once
    delivered, dead or cancelled."""
    still_open = (*WEBHOOK_CLAIMABLE, WebhookDeliveryStatus.SENDING.value)
    return connection.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.created_at) < cutoff,
            col(WebhookDelivery.status).not_in(still_open),
            col(WebhookDelivery.body) != "",
        )
        .values(body="")
    ).rowcount


def _rejected(connection: Connection, cutoff: datetime) -> int:
    return connection.execute(
        update(RejectedMessage)
        .where(col(RejectedMessage.received_at) < cutoff, col(RejectedMessage.payload) != b"")
        .values(payload=b"")
    ).rowcount


def _responders(connection: Connection, cutoff: datetime) -> int:
    return connection.execute(
        update(Responder)
        .where(col(Responder.position_at) < cutoff, col(Responder.lat).is_not(None))
        .values(lat=None, lon=None, accuracy_m=None)
    ).rowcount
