"""Defenders' Days on SQLite and PostgreSQL: events, sessions, registrations, announcements as
outbox rows, and training wristbands whose alarms take the hub's real (test) alarm path."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from broker.accounts import PasswordFile
from broker.config import BrokerSettings
from hub import admin
from hub.clock import FakeClock
from hub.conference import ConferenceConflict, ConferenceError, ConferenceNotFound, training
from hub.conference import events as service
from hub.conference.announcements import announce
from hub.conference.tables import (
    ConferenceEvent,
    ConferenceRegistration,
    RegistrationStatus,
    event_pk,
)
from hub.db import make_engine
from hub.lifecycle import Lifecycle
from hub.models import Alarm, AlarmEvent, Delivery, DeliveryStatus, Device, Role
from hub.plugin_api import BaseNotifier, DeliveryResult, InvalidChannelURL, Notification
from hub.plugin_manager import NotifierRegistry
from hub.store import Store
from sdk.models import AnnouncementIn, EventIn, NeedsIn, RegistrationIn, SessionIn

SECRET_NEED = "followed by the security service since March"


class _Sink(BaseNotifier):
    """Validates ``sink://`` URLs; these tests claim and finish deliveries themselves."""

    name = "sink"
    scheme_names = ("sink",)

    async def send(self, notification: Notification) -> DeliveryResult:
        raise AssertionError("the service tests do not send")


REGISTRY = NotifierRegistry([_Sink()])


@pytest.fixture
def engine(database_url: str) -> Engine:
    return make_engine(database_url)


@pytest.fixture
def session(engine: Engine):
    with Session(engine) as session:
        yield session


@pytest.fixture
def event(session: Session) -> ConferenceEvent:
    body = EventIn(
        name="Defenders' Days 2025", starts_on=date(2025, 5, 10), ends_on=date(2025, 5, 12)
    )
    return service.create_event(session, body, "api:test")


def _defender(engine: Engine, name: str = "Ana", language: str = "ru") -> int:
    row = admin.add_defender(engine, name, language=language)
    assert row.id is not None
    return row.id


def _register_defender(
    session: Session, event: ConferenceEvent, defender_id: int, channel: str | None = None
) -> ConferenceRegistration:
    body = RegistrationIn(kind="defender", defender_id=defender_id, channel_url=channel)
    return service.register(session, REGISTRY, event, body, "api:test")


def _register_guest(
    session: Session, event: ConferenceEvent, name: str, channel: str | None = None
) -> ConferenceRegistration:
    body = RegistrationIn(kind="guest", name=name, channel_url=channel)
    return service.register(session, REGISTRY, event, body, "api:test")


# -- events and sessions -------------------------------------------------------------------


def test_an_event_that_ends_before_it_starts_is_refused(session: Session) -> None:
    body = EventIn(name="Backwards", starts_on=date(2025, 5, 10), ends_on=date(2025, 5, 9))
    with pytest.raises(ConferenceError, match=r"ends .* before it starts"):
        service.create_event(session, body, "api:test")


def test_sessions_come_back_by_start_time_in_utc(session: Session, event) -> None:
    moscow = timezone(timedelta(hours=3))
    later = SessionIn(
        title="Digital security",
        starts_at=datetime(2025, 5, 11, 9, 0, tzinfo=UTC),
        ends_at=datetime(2025, 5, 11, 10, 0, tzinfo=UTC),
    )
    # 00:30 on the event's first day where it is held, 21:30 UTC the day before
    early = SessionIn(
        title="Wristband training",
        kind="training",
        starts_at=datetime(2025, 5, 10, 0, 30, tzinfo=moscow),
        ends_at=datetime(2025, 5, 10, 2, 0, tzinfo=moscow),
    )
    service.add_session(session, event, later)
    service.add_session(session, event, early)

    found = service.sessions_of(session, event.id)

    assert [row.title for row in found] == ["Wristband training", "Digital security"]
    assert service.as_utc(found[0].starts_at) == datetime(2025, 5, 9, 21, 30, tzinfo=UTC)
    assert found[0].kind == "training"


@pytest.mark.parametrize(
    ("starts", "ends", "message"),
    [
        (datetime(2025, 5, 10, 10), datetime(2025, 5, 10, 10), "end after it starts"),
        (datetime(2025, 5, 10, 10), datetime(2025, 5, 10, 9), "end after it starts"),
        (datetime(2025, 5, 9, 23), datetime(2025, 5, 10, 1), "outside the event's days"),
        (datetime(2025, 5, 12, 23), datetime(2025, 5, 13, 1), "outside the event's days"),
    ],
)
def test_a_session_must_end_after_it_starts_and_lie_within_the_event(
    session: Session, event, starts: datetime, ends: datetime, message: str
) -> None:
    with pytest.raises(ConferenceError, match=message):
        service.add_session(session, event, SessionIn(title="X", starts_at=starts, ends_at=ends))
    assert service.sessions_of(session, event.id) == []


# -- registrations -------------------------------------------------------------------------


def test_a_defender_registration_takes_the_defenders_name_and_language(
    engine: Engine, session: Session, event, caplog: pytest.LogCaptureFixture
) -> None:
    defender_id = _defender(engine, "Natalia E.", language="ru")
    body = RegistrationIn(
        kind="defender",
        defender_id=defender_id,
        channel_url="sink://natalia",
        needs=NeedsIn(visa_letter=True, security_considerations=SECRET_NEED),
    )
    with caplog.at_level(logging.DEBUG):
        row = service.register(session, REGISTRY, event, body, "api:test")

    assert (row.name, row.language, row.kind, row.status) == (
        "Natalia E.",
        "ru",
        "defender",
        "registered",
    )
    assert row.visa_letter and not row.travel_support
    assert row.security_considerations == SECRET_NEED
    assert SECRET_NEED not in repr(row) and "sink://natalia" not in repr(row)
    assert SECRET_NEED not in caplog.text and "Natalia E." not in caplog.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "defender"}, "needs defender_id"),
        ({"kind": "defender", "defender_id": 987654}, "no defender 987654"),
        ({"kind": "guest"}, "needs a name"),
        ({"kind": "guest", "name": "Guest", "defender_id": 1}, "no defender_id"),
    ],
)
def test_registrations_missing_who_they_are_for_are_refused(
    session: Session, event, body: dict[str, object], message: str
) -> None:
    with pytest.raises(ConferenceError, match=message):
        service.register(session, REGISTRY, event, RegistrationIn.model_validate(body), "x")


def test_a_defender_registration_with_its_own_name_is_refused(
    engine: Engine, session: Session, event
) -> None:
    body = RegistrationIn(kind="defender", defender_id=_defender(engine), name="Someone else")
    with pytest.raises(ConferenceError, match="takes the defender's name"):
        service.register(session, REGISTRY, event, body, "x")


def test_a_channel_no_notifier_can_use_is_refused(session: Session, event) -> None:
    with pytest.raises(InvalidChannelURL):
        _register_guest(session, event, "Guest", channel="nosuch://x")
    with pytest.raises(InvalidChannelURL):
        _register_guest(session, event, "Guest", channel="not a url")


def test_a_defender_registers_once_per_event_until_cancelled(
    engine: Engine, session: Session, event
) -> None:
    defender_id = _defender(engine)
    first = _register_defender(session, event, defender_id)
    with pytest.raises(ConferenceConflict, match="already registered"):
        _register_defender(session, event, defender_id)

    service.cancel_registration(engine, event.id, _pk(first), None, _now(), "api:test")
    again = _register_defender(session, event, defender_id)

    assert again.id != first.id and again.status == "registered"


def test_the_database_keeps_one_active_registration_per_defender_and_event(
    engine: Engine, event
) -> None:
    """What stops two requests registering the same defender at the same moment."""
    defender_id = _defender(engine)

    def row(status: str) -> ConferenceRegistration:
        return ConferenceRegistration(
            event_id=event.id, kind="defender", defender_id=defender_id, name="A", status=status
        )

    with Session(engine) as session:
        session.add_all([row("cancelled"), row("cancelled"), row("registered")])
        session.commit()
        session.add(row("registered"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_a_registration_of_another_event_is_not_found(session: Session, engine, event) -> None:
    other = service.create_event(
        session, EventIn(name="Other", starts_on=date(2025, 6, 1), ends_on=date(2025, 6, 1)), "x"
    )
    guest = _register_guest(session, other, "Guest")
    with pytest.raises(ConferenceNotFound):
        service.get_registration(session, event.id, _pk(guest))
    with pytest.raises(ConferenceNotFound):
        service.cancel_registration(engine, event.id, _pk(guest), None, _now(), "x")


# -- announcements -------------------------------------------------------------------------


def test_an_announcement_queues_one_message_per_active_registration_with_a_channel(
    engine: Engine, session: Session, event
) -> None:
    ana = _register_defender(session, event, _defender(engine, "Ana", "ru"), "sink://ana")
    guest = _register_guest(session, event, "Guest", "sink://guest")
    _register_guest(session, event, "No channel")
    gone = _register_guest(session, event, "Gone", "sink://gone")
    service.cancel_registration(engine, event.id, _pk(gone), None, _now(), "x")
    body = AnnouncementIn(title="Room change", body="Day 2 moves to room B.")

    made = announce(session, event, body, "api:hq", _now())

    assert made.recipients == 2 and made.short == "Room change"
    rows = session.exec(select(Delivery).where(Delivery.kind == "announcement")).all()
    assert {row.key for row in rows} == {
        f"announcement:{made.id}:registration:{ana.id}",
        f"announcement:{made.id}:registration:{guest.id}",
    }
    by_channel = {row.channel_url: row for row in rows}
    assert set(by_channel) == {"sink://ana", "sink://guest"}
    assert by_channel["sink://ana"].language == "ru"
    assert all(
        (row.title, row.body, row.alarm_pk, row.contact_id, row.status)
        == ("Room change", "Day 2 moves to room B.", None, None, "pending")
        for row in rows
    )


def test_an_announcement_that_fails_for_good_alerts_hq_and_has_no_other_channel(
    engine: Engine, session: Session, event
) -> None:
    """Outbox rows without an alarm, contact or responder go through the dispatcher's
    bookkeeping: no fallback to look up, no alarm to mark notified, HQ told who was missed."""
    admin.add_contact(engine, REGISTRY, "HQ desk", "sink://hq", None)
    _register_guest(session, event, "Guest", "sink://guest")
    announce(session, event, AnnouncementIn(title="Welcome", body="Hello"), "api:hq", _now())
    store = Store(engine)

    (job,) = store.claim_pending()
    assert job.alarm_pk is None
    assert job.notification.alarm_ref == "announcement" and not job.notification.is_test
    assert job.notification.title == "Welcome" and job.notification.body == "Hello"
    completed = store.finish_delivery(
        job.delivery_id, DeliveryResult.failure("no such mailbox", permanent=True), job.attempt
    )

    assert completed is False
    with Session(engine) as check:
        dead = check.get(Delivery, job.delivery_id)
        assert dead is not None and dead.status == DeliveryStatus.DEAD.value
        alerts = check.exec(select(Delivery).where(Delivery.kind == "dead_letter")).all()
        assert [alert.recipient for alert in alerts] == ["HQ desk"]
        assert "Guest" in alerts[0].body and "announcement" in alerts[0].body
        fallbacks = check.exec(select(Delivery).where(Delivery.channel_index > 0)).all()
        assert fallbacks == []


# -- training ------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "broker"


def _accounts(data_dir: Path) -> PasswordFile:
    return PasswordFile(BrokerSettings(data_dir=data_dir).password_file)


def test_training_hands_each_defender_one_working_wristband_and_is_idempotent(
    engine: Engine, session: Session, event, data_dir: Path
) -> None:
    first = _register_defender(session, event, _defender(engine, "Ana"))
    _register_guest(session, event, "Guest")

    kits = training.start_training(engine, event.id, data_dir)

    (kit,) = kits
    assert kit.device_id == f"train-{event.id}-{first.id}" and kit.password
    assert _accounts(data_dir).check(kit.device_id, kit.password)
    with Session(engine) as check:
        device = check.get(Device, kit.device_id)
        assert device is not None and device.active and device.defender_id == first.defender_id
        assert check.get(ConferenceEvent, event.id).training_active  # type: ignore[union-attr]

    second = _register_defender(session, event, _defender(engine, "Bea"))
    again = training.start_training(engine, event.id, data_dir)

    assert [(k.registration_id, k.password is None) for k in again] == [
        (first.id, True),
        (second.id, False),
    ]
    assert _accounts(data_dir).check(kit.device_id, kit.password), "first kit unchanged"


def test_ending_training_retires_every_kit_and_restarting_reissues_them(
    engine: Engine, session: Session, event, data_dir: Path
) -> None:
    _register_defender(session, event, _defender(engine))
    (kit,) = training.start_training(engine, event.id, data_dir)

    training.end_training(engine, event.id, data_dir)

    assert kit.device_id not in _accounts(data_dir)
    with Session(engine) as check:
        assert not check.get(Device, kit.device_id).active  # type: ignore[union-attr]
        assert not check.get(ConferenceEvent, event.id).training_active  # type: ignore[union-attr]

    (back,) = training.start_training(engine, event.id, data_dir)

    assert back.device_id == kit.device_id and back.password not in (None, kit.password)
    assert _accounts(data_dir).check(back.device_id, back.password or "")
    assert not _accounts(data_dir).check(kit.device_id, kit.password or "")


def test_cancelling_a_registration_retires_its_wristband(
    engine: Engine, session: Session, event, data_dir: Path
) -> None:
    registration = _register_defender(session, event, _defender(engine))
    (kit,) = training.start_training(engine, event.id, data_dir)

    service.cancel_registration(engine, event.id, _pk(registration), data_dir, _now(), "x")

    assert kit.device_id not in _accounts(data_dir)
    with Session(engine) as check:
        assert not check.get(Device, kit.device_id).active  # type: ignore[union-attr]
        assert training.kits(check, event.id) == []


def test_training_without_broker_accounts_is_refused(engine: Engine, event) -> None:
    with pytest.raises(ConferenceConflict, match="data_dir"):
        training.start_training(engine, event.id, None)


def test_a_training_alarm_reaches_only_its_participant_never_hq_contacts_or_the_press(
    engine: Engine, session: Session, event, data_dir: Path
) -> None:
    defender_id = _defender(engine)
    admin.add_contact(engine, REGISTRY, "HQ desk", "sink://hq", None)  # receives tests
    admin.add_contact(engine, REGISTRY, "Sister", "sink://sister", defender_id, receives_tests=True)
    admin.add_contact(engine, REGISTRY, "Press", "sink://press", None, role=Role.PRESS)
    registration = _register_defender(session, event, defender_id, channel="sink://trainee")
    (kit,) = training.start_training(engine, event.id, data_dir)

    alarm_pk = training.run_training_alarm(
        engine, Lifecycle(), FakeClock(), event.id, _pk(registration), "api:hq"
    )

    with Session(engine) as check:
        alarm = check.get(Alarm, alarm_pk)
        assert alarm is not None
        assert (alarm.kind, alarm.device_id, alarm.defender_id) == (
            "test",
            kit.device_id,
            defender_id,
        )
        deliveries = check.exec(select(Delivery).where(Delivery.alarm_pk == alarm_pk)).all()
        assert [(d.recipient, d.role, d.kind, d.channel_url) for d in deliveries] == [
            ("Ana", "participant", "test", "sink://trainee")
        ]
        events = check.exec(select(AlarmEvent).where(AlarmEvent.alarm_pk == alarm_pk)).all()
        assert ("training", "api:hq") in {(e.kind, e.actor) for e in events}


def test_training_alarms_need_training_on_and_a_kit(
    engine: Engine, session: Session, event, data_dir: Path
) -> None:
    registration = _register_defender(session, event, _defender(engine))
    guest = _register_guest(session, event, "Guest")

    def run(registration_id: int) -> int:
        return training.run_training_alarm(
            engine, Lifecycle(), FakeClock(), event.id, registration_id, "x"
        )

    with pytest.raises(ConferenceConflict, match="training is off"):
        run(_pk(registration))
    training.start_training(engine, event.id, data_dir)
    with pytest.raises(ConferenceConflict, match="no training wristband"):
        run(_pk(guest))
    with pytest.raises(ConferenceNotFound):
        run(987654)
    service.cancel_registration(engine, event.id, _pk(registration), data_dir, _now(), "x")
    with pytest.raises(ConferenceConflict, match="no training wristband"):
        run(_pk(registration))
    with Session(engine) as check:
        assert check.exec(select(Alarm)).all() == []
        assert check.get(ConferenceRegistration, registration.id).status == (  # type: ignore[union-attr]
            RegistrationStatus.CANCELLED.value
        )


def _training_alarm(
    engine: Engine, session: Session, event: ConferenceEvent, data_dir: Path
) -> tuple[ConferenceRegistration, int]:
    """A defender registered with a channel, training on, and a training alarm of her kit
    queued for her (nothing sends it: these tests claim deliveries themselves)."""
    registration = _register_defender(session, event, _defender(engine), channel="sink://t")
    training.start_training(engine, event_pk(event), data_dir)
    alarm_pk = training.run_training_alarm(
        engine, Lifecycle(), FakeClock(), event_pk(event), _pk(registration), "x"
    )
    return registration, alarm_pk


def test_a_training_message_under_way_when_the_registration_is_cancelled_is_not_retried(
    engine: Engine, session: Session, event, data_dir: Path
) -> None:
    registration, _ = _training_alarm(engine, session, event, data_dir)
    store = Store(engine)
    (job,) = store.claim_pending()  # being sent to her provider...

    service.cancel_registration(engine, event.id, _pk(registration), data_dir, _now(), "api:hq")
    store.finish_delivery(job.delivery_id, DeliveryResult.failure("timed out"), job.attempt)

    with Session(engine) as check:
        row = check.get(Delivery, job.delivery_id)
        assert row is not None
        assert (row.status, row.detail) == (
            "cancelled",
            "cancelled: the registration was cancelled",
        )
        assert row.registration_id == registration.id
    assert store.claim_pending() == []  # no retry, no other channel, no dead letter


def test_cancelling_the_registration_a_training_alarm_waits_for_completes_its_first_round(
    engine: Engine, session: Session, event, data_dir: Path
) -> None:
    registration, alarm_pk = _training_alarm(engine, session, event, data_dir)

    service.cancel_registration(engine, event.id, _pk(registration), data_dir, _now(), "api:hq")

    with Session(engine) as check:
        (row,) = check.exec(select(Delivery).where(Delivery.alarm_pk == alarm_pk)).all()
        assert row.status == "cancelled"  # at once, not when the dispatcher comes to it
        alarm = check.get(Alarm, alarm_pk)
        assert alarm is not None and alarm.state == "notified"
    assert Store(engine).claim_pending() == []


def test_training_alarm_messages_stop_when_training_ends_but_announcements_do_not(
    engine: Engine, session: Session, event, data_dir: Path
) -> None:
    _, alarm_pk = _training_alarm(engine, session, event, data_dir)
    announce(session, event, AnnouncementIn(title="Bus", body="9:00"), "api:hq", _now())

    training.end_training(engine, event.id, data_dir)
    (job,) = Store(engine).claim_pending()

    assert job.alarm_pk is None and job.notification.title == "Bus"
    with Session(engine) as check:
        (stopped,) = check.exec(select(Delivery).where(Delivery.alarm_pk == alarm_pk)).all()
        assert (stopped.status, stopped.detail) == (
            "cancelled",
            "cancelled: training ended for the event",
        )


def _pk(row: ConferenceRegistration) -> int:
    assert row.id is not None
    return row.id


def _now() -> datetime:
    return datetime.now(UTC)
