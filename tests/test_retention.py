"""Retention erases old positions and keeps the record of what happened (SQLite and PostgreSQL),
and the running hub applies it by itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.config import RetentionConfig
from hub.db import make_engine
from hub.models import Alarm, Defender, Delivery, Device, RejectedMessage, Responder
from hub.retention import ERASED, apply_retention
from tests.support.hubs import RunningHub, hub_config
from tests.support.receivers import wait_until

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MONTH = timedelta(days=30)
TEXT = "Position: 43.31780, 45.69820"


def _alarm(session: Session, device: Device, n: int, closed_at: datetime | None) -> Alarm:
    alarm = Alarm(
        device_id=device.id,
        defender_id=device.defender_id,
        alarm_id=f"a-{n}",
        kind="panic",
        state="resolved" if closed_at else "notified",
        device_ts=NOW - timedelta(days=60),
        seq=n,
        lat=43.3178,
        lon=45.6982,
        accuracy_m=8,
        fix_ts=NOW - timedelta(days=60),
        closed_at=closed_at,
    )
    session.add(alarm)
    session.flush()
    for status in ("sent", "retrying"):
        session.add(
            Delivery(
                key=f"k-{n}-{status}",
                alarm_pk=alarm.id,
                recipient="Sister",
                channel_url="console://",
                channel_masked="console://",
                title="ALARM",
                body=TEXT,
                short=TEXT,
                status=status,
            )
        )
    return alarm


def _populate(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        defender = Defender(name="Ana")
        session.add(defender)
        session.flush()
        assert defender.id is not None
        device = Device(id="wb-ret", defender_id=defender.id)
        session.add(device)
        session.flush()
        ids = {
            "old": _alarm(session, device, 1, NOW - MONTH - timedelta(hours=1)).id,
            "recent": _alarm(session, device, 2, NOW - MONTH + timedelta(hours=1)).id,
            "open": _alarm(session, device, 3, None).id,
        }
        for name, age in (("old", MONTH + timedelta(hours=1)), ("recent", timedelta(days=1))):
            session.add(
                RejectedMessage(
                    received_at=NOW - age,
                    topic=f"natalia/v1/devices/{name}/alarm",
                    reason="bad",
                    payload=TEXT.encode(),
                    payload_size=len(TEXT),
                )
            )
            session.add(
                Responder(
                    name=f"R-{name}",
                    channel_url="console://",
                    lat=43.3,
                    lon=45.7,
                    accuracy_m=5,
                    position_at=NOW - age,
                )
            )
        session.commit()
    return {name: pk for name, pk in ids.items() if pk is not None}


def test_positions_older_than_the_period_are_erased_and_the_rest_kept(database_url: str) -> None:
    engine = make_engine(database_url)
    ids = _populate(engine)
    result = apply_retention(engine, NOW, MONTH)
    assert (result.alarms, result.deliveries, result.rejected, result.responders) == (1, 1, 1, 1)
    with Session(engine) as session:
        old, recent, still_open = (session.get(Alarm, ids[n]) for n in ("old", "recent", "open"))
        assert old is not None and (old.lat, old.lon, old.fix_ts) == (None, None, None)
        assert old.state == "resolved" and old.kind == "panic"  # the record stays
        for kept in (recent, still_open):
            assert kept is not None and kept.lat == 43.3178
        bodies = {(row.alarm_pk, row.status): row.body for row in session.exec(select(Delivery))}
        assert bodies[(ids["old"], "sent")] == ERASED
        assert bodies[(ids["old"], "retrying")] == TEXT  # may still be sent
        assert bodies[(ids["recent"], "sent")] == TEXT
        payloads = {r.topic: r.payload for r in session.exec(select(RejectedMessage))}
        assert payloads == {
            "natalia/v1/devices/old/alarm": b"",
            "natalia/v1/devices/recent/alarm": TEXT.encode(),
        }
        positions = {r.name: r.lat for r in session.exec(select(Responder))}
        assert positions == {"R-old": None, "R-recent": 43.3}
    again = apply_retention(engine, NOW, MONTH)
    assert (again.alarms, again.deliveries, again.rejected, again.responders) == (0, 0, 0, 0)
    engine.dispose()


def test_the_running_hub_applies_retention(broker, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'natalia.db'}"
    engine = make_engine(url)
    ids = _populate(engine)  # closed long before the real "now"
    config = hub_config(broker, url)
    config.retention = RetentionConfig(positions_days=1, run_every_s=3600)
    with RunningHub(config):

        def erased() -> bool:
            with Session(engine) as session:
                alarm = session.get(Alarm, ids["old"])
                return alarm is not None and alarm.lat is None

        wait_until(erased)
    engine.dispose()


def _webhook_delivery(session: Session, n: int, status: str, age: timedelta) -> None:
    from hub.webhooks.tables import WebhookDelivery, WebhookSubscription

    hook = session.get(WebhookSubscription, 1)
    if hook is None:
        hook = WebhookSubscription(id=1, url="https://partner.example/hook", secret="s")
        session.add(hook)
        session.flush()
    session.add(
        WebhookDelivery(
            webhook_id=1,
            event_id=f"alarm_event.{n}",
            event_type="alarm.received",
            body=TEXT,
            status=status,
            created_at=NOW - age,
        )
    )


def test_webhook_bodies_and_old_messages_about_no_alarm_are_erased_too(database_url: str) -> None:
    from hub.webhooks.tables import WebhookDelivery

    engine = make_engine(database_url)
    with Session(engine) as session:
        old, recent = MONTH + timedelta(hours=1), timedelta(days=1)
        _webhook_delivery(session, 1, "delivered", old)
        _webhook_delivery(session, 2, "dead", old)
        _webhook_delivery(session, 3, "retrying", old)  # still to be POSTed: kept
        _webhook_delivery(session, 4, "delivered", recent)
        for n, age in ((1, old), (2, recent)):  # e.g. a device's report to HQ
            session.add(
                Delivery(
                    key=f"report-{n}",
                    kind="device_silent",
                    recipient="HQ",
                    channel_url="console://",
                    channel_masked="console://",
                    title="silent",
                    body=TEXT,
                    short=TEXT,
                    status="sent",
                    created_at=NOW - age,
                )
            )
        session.commit()

    result = apply_retention(engine, NOW, MONTH)

    assert (result.webhook_bodies, result.deliveries) == (2, 1)
    with Session(engine) as session:
        bodies = {row.event_id: row.body for row in session.exec(select(WebhookDelivery))}
        assert bodies == {
            "alarm_event.1": "",
            "alarm_event.2": "",
            "alarm_event.3": TEXT,
            "alarm_event.4": TEXT,
        }
        reports = {row.key: row.body for row in session.exec(select(Delivery))}
        assert reports == {"report-1": ERASED, "report-2": TEXT}
    engine.dispose()


#: Sealed columns that hold secrets, not positions: retention does not touch them.
SECRETS = {"device.key", "webhooksubscription.secret", "hubsecret.value"}


def test_every_sealed_column_that_can_hold_a_position_is_covered_by_retention() -> None:
    from sqlmodel import SQLModel

    from hub import retention
    from hub.sealing import Sealed

    sealed = {
        column.type.purpose
        for table in SQLModel.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, Sealed)
    }
    assert sealed - SECRETS == set(retention.RETAINED), (
        "a sealed column is not covered by hub/retention.py: erase it there, or list it in "
        "SECRETS here if it holds no position"
    )
    fields = set(retention.RetentionResult.__dataclass_fields__)
    assert set(retention.RETAINED.values()) <= fields


def test_natalia_retention_run_erases_old_positions_once(tmp_path, capsys) -> None:
    from hub.cli import main
    from hub.config import load_config
    from hub.db import engine_for
    from hub.setup import init_directory

    config = init_directory(tmp_path / "site", port=18831, http_port=18081)
    engine = engine_for(load_config(config))
    ids = _populate(engine)  # closed about two months before the real "now"

    assert main(["retention", "run", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("retention (30 days): positions erased: ")
    with Session(engine) as session:
        old, still_open = session.get(Alarm, ids["old"]), session.get(Alarm, ids["open"])
        assert old is not None and old.lat is None
        assert still_open is not None and still_open.lat is not None
    assert main(["retention", "run", "-c", str(config)]) == 0
    assert "positions erased: 0 alarms, 0 messages" in capsys.readouterr().out
    engine.dispose()
