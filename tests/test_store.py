"""The alarm store on SQLite and PostgreSQL: one commit per alarm with its outbox, idempotent."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from devicekit.protocol import Alarm, AlarmKind, Cancel, Location, Position, utcnow
from hub import admin
from hub.db import make_engine
from hub.plugin_api import BaseNotifier, DeliveryResult, Notification
from hub.plugin_manager import NotifierRegistry
from hub.store import Store, UnknownDevice
from tests.support.population import populate


class _Sink(BaseNotifier):
    """Only used to validate channel URLs while registering; these tests send nothing."""

    name = "sink"
    scheme_names = ("sink",)

    async def send(self, notification: Notification) -> DeliveryResult:
        raise AssertionError("store tests do not send")


@pytest.fixture
def store(database_url: str) -> Store:
    return Store(make_engine(database_url))


@pytest.fixture
def people(store: Store, tmp_path: Path):
    return populate(
        store.engine,
        NotifierRegistry([_Sink()]),
        tmp_path / "broker",
        contacts={"Sister": "sink://sister", "Lawyer": "sink://lawyer"},
        hq={"HQ": "sink://hq"},
    )


def _alarm(alarm_id: str = "al-1", seq: int = 1, position: bool = True) -> Alarm:
    fix = Position(lat=43.3178, lon=45.6982, accuracy_m=7, fix_ts=utcnow()) if position else None
    return Alarm(alarm_id=alarm_id, kind=AlarmKind.PANIC, ts=utcnow(), seq=seq, position=fix)


def test_alarm_is_stored_with_one_delivery_per_recipient(store: Store, people) -> None:
    outcome = store.record_alarm(people.device_id, _alarm())
    assert outcome.created
    deliveries = store.deliveries(outcome.alarm_pk)
    assert sorted(d.recipient for d in deliveries) == ["HQ", "Lawyer", "Sister"]
    assert {d.status for d in deliveries} == {"pending"}
    assert all("43.31780, 45.69820" in d.body and "openstreetmap.org" in d.body for d in deliveries)
    assert [e.kind for e in store.events(outcome.alarm_pk)] == ["received", "stage"]


def test_contacts_of_another_defender_are_not_told(store: Store, people, tmp_path: Path) -> None:
    other = admin.add_defender(store.engine, "Someone Else")
    assert other.id is not None
    admin.add_contact(store.engine, NotifierRegistry([_Sink()]), "Other", "sink://o", other.id)
    outcome = store.record_alarm(people.device_id, _alarm())
    assert "Other" not in {d.recipient for d in store.deliveries(outcome.alarm_pk)}


def test_alarm_replayed_with_same_id_is_stored_once(store: Store, people) -> None:
    first = store.record_alarm(people.device_id, _alarm())
    copies = [store.record_alarm(people.device_id, _alarm(seq=n)) for n in (2, 3)]
    assert not any(c.created for c in copies)
    assert {c.alarm_pk for c in copies} == {first.alarm_pk}
    assert len(store.alarms()) == 1
    assert len(store.deliveries(first.alarm_pk)) == 3
    stored = store.get_alarm(first.alarm_pk)
    assert stored is not None and stored.copies_received == 3


def test_alarm_without_fix_says_so(store: Store, people) -> None:
    outcome = store.record_alarm(people.device_id, _alarm(position=False))
    body = store.deliveries(outcome.alarm_pk)[0].body
    assert "no position fix" in body and "openstreetmap" not in body


def test_alarm_from_unregistered_device_raises(store: Store, people) -> None:
    with pytest.raises(UnknownDevice, match="not registered"):
        store.record_alarm("wb-unknown", _alarm())
    assert store.alarms() == []


def test_rejected_message_is_kept_whole_and_reported_to_hq(store: Store, people) -> None:
    payload = b'{"v": 1, "type": "alarm", "broken'
    rejected_id = store.record_rejected("natalia/v1/devices/x/alarm", "x", "alarm", "bad", payload)
    [kept] = store.rejected()
    assert (kept.id, kept.payload, kept.reason, kept.payload_size) == (
        rejected_id,
        payload,
        "bad",
        len(payload),
    )
    reports = [d for d in store.deliveries() if d.rejected_pk == rejected_id]
    assert [d.recipient for d in reports] == ["HQ"]


def test_alarm_is_notified_once_every_delivery_has_a_result(store: Store, people) -> None:
    outcome = store.record_alarm(people.device_id, _alarm())
    jobs = store.claim_pending()
    assert len(jobs) == 3 and store.claim_pending() == []
    results = [store.finish_delivery(job.delivery_id, DeliveryResult.success()) for job in jobs[:2]]
    assert results == [False, False]
    refused = DeliveryResult.failure("boom", permanent=True)  # no retry, no fallback: dead
    assert store.finish_delivery(jobs[2].delivery_id, refused) is True
    stored = store.get_alarm(outcome.alarm_pk)
    assert stored is not None and stored.state == "notified"
    rows = [d for d in store.deliveries(outcome.alarm_pk) if d.kind != "dead_letter"]
    assert sorted(d.status for d in rows) == ["dead", "sent", "sent"]


def test_plugins_are_given_each_delivery_by_the_id_outsiders_see(store: Store, people) -> None:
    """A plugin may hand ``delivery_id`` on (an idempotency key for a partner's own system):
    the row's own id would count the messages for HQ only in between (hub.outside_ids)."""
    from hub.outside_ids import outside_ids

    store.record_alarm(people.device_id, _alarm())
    jobs = store.claim_pending()
    shown = outside_ids(store.engine).deliveries
    given = [job.notification.delivery_id for job in jobs]
    assert given == [shown.shown(job.delivery_id) for job in jobs]
    assert given != [job.delivery_id for job in jobs]


def test_deliveries_interrupted_by_a_crash_are_sent_again(store: Store, people) -> None:
    store.record_alarm(people.device_id, _alarm())
    claimed = store.claim_pending()
    restarted = Store(store.engine)  # the next hub process; the crashed one's lease is over
    assert restarted.requeue_interrupted(lease=timedelta(0)) == len(claimed)
    again = restarted.claim_pending()
    assert [j.delivery_id for j in again] == [j.delivery_id for j in claimed]
    assert all(d.attempts == 2 for d in store.deliveries())


def test_cancel_or_location_for_an_alarm_never_raised_is_refused(store: Store, people) -> None:
    from hub.store import UnknownAlarm

    cancel = Cancel(alarm_id="never", ts=utcnow(), seq=5, code="4711")
    with pytest.raises(UnknownAlarm, match="never raised"):
        store.record_device_message(people.device_id, cancel)
    where = Position(lat=1.0, lon=2.0, accuracy_m=5, fix_ts=utcnow())
    with pytest.raises(UnknownAlarm):
        store.record_device_message(
            people.device_id, Location(alarm_id="never", ts=utcnow(), seq=6, position=where)
        )


def test_refused_cancel_is_shown_once_per_message_and_does_not_stop_the_alarm(
    store: Store, people
) -> None:
    outcome = store.record_alarm(people.device_id, _alarm())
    cancel = Cancel(alarm_id="al-1", ts=utcnow(), seq=2, code="4711")  # no code is set
    for _ in range(3):  # the device re-sends until it is settled
        store.record_device_message(people.device_id, cancel)
    events = [e for e in store.events(outcome.alarm_pk) if e.kind == "cancel_refused"]
    assert len(events) == 1 and "4711" not in events[0].detail
    stored = store.get_alarm(outcome.alarm_pk)
    assert stored is not None and stored.state == "received"


def test_the_sqlite_files_are_readable_by_their_owner_only(tmp_path) -> None:
    import os
    import stat

    from hub.db import make_engine
    from hub.store import Store

    engine = make_engine(f"sqlite:///{tmp_path / 'private.db'}")
    Store(engine).alarms()  # a connection: WAL and shared-memory files exist now
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == ["private.db", "private.db-shm", "private.db-wal"]
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path.name
    engine.dispose()


@pytest.mark.postgres
def test_alarm_times_at_the_ends_of_the_range_read_back_unchanged_whatever_the_server_zone(
    postgres_server_url: str, tmp_path: Path
) -> None:
    """Times are stored as UTC without an offset: a server (or database) in another zone
    shifted every one of them, and 9999-12-31 23:59 UTC east of Greenwich did not read back."""
    from datetime import UTC, datetime

    from sqlalchemy.engine import make_url

    from hub.faults import scratch_database
    from hub.faults.postgres import _admin_connect

    with scratch_database(postgres_server_url) as url:
        with _admin_connect(postgres_server_url) as conn:
            name = make_url(url).database
            conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Pacific/Kiritimati'")
        engine = make_engine(url)
        try:
            store = Store(engine)
            people = populate(store.engine, NotifierRegistry([_Sink()]), tmp_path / "b", {})
            for n, moment in enumerate(
                [
                    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
                    datetime(1, 1, 1, tzinfo=UTC),
                    datetime(2026, 3, 1, 12, tzinfo=UTC),
                ]
            ):
                message = _alarm(f"al-{n}", seq=n + 1).model_copy(update={"ts": moment})
                store.record_alarm(people.device_id, message)
                stored = store.find_alarm(people.device_id, f"al-{n}")
                assert stored is not None
                assert stored.device_ts.replace(tzinfo=UTC) == moment
        finally:
            engine.dispose()
