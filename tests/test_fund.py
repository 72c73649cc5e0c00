"""The emergency fund on SQLite and PostgreSQL: the review's state machine, the audit trail,
exact amounts, the messages each change queues, and two reviewers racing one request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from devicekit.protocol import Alarm, AlarmKind, Position, utcnow
from hub.db import make_engine
from hub.fund import service
from hub.fund.service import FundConflict, FundInvalid, FundNotFound
from hub.fund.tables import FundRequest, FundRequestEvent, MoneyError, to_hundredths
from hub.models import Delivery
from hub.plugin_api import BaseNotifier, DeliveryResult, Notification
from hub.plugin_manager import NotifierRegistry
from hub.store import Store
from sdk.models import FundPurpose, FundRequestIn, FundRequestUpdate, FundState
from tests.support.population import Population, populate

S, R, A, X, D = (
    FundState.SUBMITTED,
    FundState.UNDER_REVIEW,
    FundState.APPROVED,
    FundState.REJECTED,
    FundState.DISBURSED,
)
#: The review as specified, written out independently of ``service.TRANSITIONS``.
ALLOWED = {S: {R, X}, R: {A, X}, A: {D}, X: set(), D: set()}
#: How to bring a new request to each state.
PATH_TO = {S: [], R: [R], A: [R, A], X: [X], D: [R, A, D]}
NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


class _Sink(BaseNotifier):
    """Validates channel URLs while registering; these tests only queue messages."""

    name = "sink"
    scheme_names = ("sink",)

    async def send(self, notification: Notification) -> DeliveryResult:
        raise AssertionError("fund service tests do not send")


@dataclass
class World:
    engine: Engine
    store: Store
    ana: Population  #: with a trusted contact "Sister" (es) and the HQ contact
    ben: Population  #: another defender, with a trusted contact "Brother"

    def session(self) -> Session:
        return Session(self.engine)

    def alarm_of(self, who: Population, alarm_id: str) -> int:
        fix = Position(lat=43.3178, lon=45.6982, accuracy_m=7, fix_ts=utcnow())
        message = Alarm(alarm_id=alarm_id, kind=AlarmKind.PANIC, ts=utcnow(), seq=1, position=fix)
        return self.store.record_alarm(who.device_id, message).alarm_pk


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    engine = make_engine(database_url)
    registry = NotifierRegistry([_Sink()])
    ana = populate(
        engine,
        registry,
        tmp_path / "broker",
        contacts={"Sister": "sink://sister"},
        hq={"HQ desk": "sink://hq"},
        defender_name="Ana",
    )
    ben = populate(
        engine, registry, tmp_path / "broker", {"Brother": "sink://brother"}, device_id="wb-2"
    )
    with Session(engine) as session:  # the sister reads Spanish
        session.execute(text("UPDATE contact SET language = 'es' WHERE name = 'Sister'"))
        session.commit()
    yield World(engine, Store(engine), ana, ben)
    engine.dispose()


def new_request(defender_id: int, **overrides: Any) -> FundRequestIn:
    values: dict[str, Any] = dict(
        defender_id=defender_id,
        purpose=FundPurpose.TEMPORARY_RELOCATION,
        amount=Decimal("1500.00"),
        currency="EUR",
        description="Two months in a safe flat after the raid",
    )
    values.update(overrides)
    return FundRequestIn(**values)


def submitted(world: World, **overrides: Any) -> int:
    with world.session() as session:
        row = service.submit(
            session, new_request(world.ana.defender_id, **overrides), "api:intake", NOW
        )
        session.commit()
        assert row.id is not None
        return row.id


def move(world: World, request_id: int, *states: FundState, actor: str = "api:hq") -> None:
    for step, state in enumerate(states, start=1):
        with world.session() as session:
            service.transition(session, request_id, state, "", actor, NOW + timedelta(minutes=step))
            session.commit()


def state_of(world: World, request_id: int) -> FundState:
    with world.session() as session:
        row = session.get(FundRequest, request_id)
        assert row is not None
        return FundState(row.state)


def trail(world: World, request_id: int) -> list[FundRequestEvent]:
    with world.session() as session:
        return service.history(session, request_id)


def fund_messages(world: World, request_id: int) -> list[Delivery]:
    with world.session() as session:
        query = (
            select(Delivery)
            .where(col(Delivery.key).startswith(f"fund:{request_id}:"))
            .order_by(col(Delivery.id))
        )
        return list(session.exec(query))


# -- the state machine ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [[R, A, D], [X], [R, X]], ids=["approved-and-paid", "rejected", "rejected-in-review"]
)
def test_every_allowed_transition_moves_the_request_and_is_audited(
    world: World, path: list[FundState]
) -> None:
    request_id = submitted(world)
    move(world, request_id, *path)
    assert state_of(world, request_id) == path[-1]
    changes = [(e.from_state, e.to_state) for e in trail(world, request_id) if e.action == "state"]
    assert changes == list(
        zip([S.value] + [s.value for s in path[:-1]], [s.value for s in path], strict=True)
    )


@pytest.mark.parametrize("start", list(FundState))
def test_every_other_transition_is_a_conflict_that_names_the_allowed_states(
    world: World, start: FundState
) -> None:
    request_id = submitted(world)
    move(world, request_id, *PATH_TO[start])
    before = len(trail(world, request_id))
    for wanted in set(FundState) - ALLOWED[start]:
        with world.session() as session, pytest.raises(FundConflict) as refused:
            service.transition(session, request_id, wanted, "", "api:hq", NOW)
        assert refused.value.code == "transition_not_allowed"
        message = str(refused.value)
        assert f"is {start.value}" in message
        assert all(allowed.value in message for allowed in ALLOWED[start]), message
        if not ALLOWED[start]:
            assert "final" in message
    assert state_of(world, request_id) == start
    assert len(trail(world, request_id)) == before


def test_a_transition_of_an_unknown_request_is_not_found(world: World) -> None:
    with world.session() as session, pytest.raises(FundNotFound, match="no fund request 99999"):
        service.transition(session, 99999, R, "", "api:hq", NOW)


# -- the audit trail -----------------------------------------------------------------------------


def test_the_trail_has_creation_changes_and_decisions_with_actor_time_and_note(
    world: World,
) -> None:
    request_id = submitted(world)
    with world.session() as session:
        change = FundRequestUpdate(amount=Decimal("1750.5"), description="Three months")
        service.edit(session, request_id, change, "api:intake", NOW + timedelta(seconds=30))
        session.commit()
    with world.session() as session:
        service.transition(session, request_id, R, "  checking the landlord  ", "api:hq", NOW)
        session.commit()

    created, updated, reviewed = trail(world, request_id)
    assert (created.action, created.actor, created.from_state, created.to_state) == (
        "created", "api:intake", None, "submitted",
    )  # fmt: skip
    assert (updated.action, updated.actor) == ("updated", "api:intake")
    assert updated.note == "amount: 1500.00 -> 1750.50; description changed"
    assert "Three months" not in updated.note  # free text stays out of the trail
    assert (reviewed.action, reviewed.actor, reviewed.note) == (
        "state", "api:hq", "checking the landlord",
    )  # fmt: skip
    assert created.at.replace(tzinfo=UTC) == NOW
    assert updated.at.replace(tzinfo=UTC) == NOW + timedelta(seconds=30)


def test_an_edit_that_changes_nothing_leaves_no_trail_and_sends_nothing(world: World) -> None:
    request_id = submitted(world)
    with world.session() as session:
        same = FundRequestUpdate(
            amount=Decimal("1500"), currency="EUR", purpose=FundPurpose.TEMPORARY_RELOCATION
        )
        service.edit(session, request_id, same, "api:intake", NOW)
        session.commit()
    assert [e.action for e in trail(world, request_id)] == ["created"]
    assert len(fund_messages(world, request_id)) == 2  # the submission's only


def test_a_start_up_grant_can_be_added_and_removed_but_the_amount_cannot_be_removed(
    world: World,
) -> None:
    request_id = submitted(world)
    with world.session() as session:
        service.edit(session, request_id, FundRequestUpdate(startup_grant=Decimal("200")), "a", NOW)
        session.commit()
    with world.session() as session:
        service.edit(session, request_id, FundRequestUpdate(startup_grant=None), "a", NOW)
        session.commit()
    with world.session() as session, pytest.raises(FundInvalid, match="amount cannot be removed"):
        service.edit(session, request_id, FundRequestUpdate(amount=None), "a", NOW)
    notes = [e.note for e in trail(world, request_id) if e.action == "updated"]
    assert notes == ["startup_grant: none -> 200.00", "startup_grant: 200.00 -> none"]


@pytest.mark.parametrize("start", [R, A, X, D])
def test_a_request_can_be_edited_only_while_submitted(world: World, start: FundState) -> None:
    request_id = submitted(world)
    move(world, request_id, *PATH_TO[start])
    with world.session() as session, pytest.raises(FundConflict) as refused:
        service.edit(session, request_id, FundRequestUpdate(amount=Decimal("1")), "api:x", NOW)
    assert refused.value.code == "not_editable"
    assert f"is {start.value}: it can be changed only while submitted" in str(refused.value)


def test_events_after_an_id_feed_every_change_in_order(world: World) -> None:
    first = submitted(world)
    move(world, first, R)
    second = submitted(world)
    with world.session() as session:
        everything = service.fund_events_after(session, 0, 100)
        assert [(e.request_id, e.action) for e in everything] == [
            (first, "created"), (first, "state"), (second, "created"),
        ]  # fmt: skip
        assert everything[0].id is not None
        rest = service.fund_events_after(session, everything[0].id, 1)
    assert [(e.request_id, e.to_state) for e in rest] == [(first, "under_review")]


# -- references and amounts ----------------------------------------------------------------------


def test_a_request_names_an_existing_defender_and_only_their_own_alarm(world: World) -> None:
    ana_alarm = world.alarm_of(world.ana, "al-ana")
    ben_alarm = world.alarm_of(world.ben, "al-ben")
    with world.session() as session:
        row = service.submit(
            session, new_request(world.ana.defender_id, alarm_id=ana_alarm), "api:i", NOW
        )
        assert row.alarm_id == ana_alarm
        with pytest.raises(FundInvalid, match="no defender 99999"):
            service.submit(session, new_request(99999), "api:i", NOW)
        with pytest.raises(FundInvalid, match="no alarm 99999"):
            service.submit(session, new_request(world.ana.defender_id, alarm_id=99999), "a", NOW)
        with pytest.raises(FundInvalid, match=f"alarm {ben_alarm} is not an alarm of defender"):
            service.submit(
                session, new_request(world.ana.defender_id, alarm_id=ben_alarm), "api:i", NOW
            )


@pytest.mark.parametrize(
    "amount", ["0.01", "0.10", "1500.99", "0.3", "999999999999.99", "123456789012.34"]
)
def test_amounts_come_back_exactly_as_given(world: World, amount: str) -> None:
    request_id = submitted(world, amount=Decimal(amount), startup_grant=Decimal(amount))
    with world.session() as session:
        row = session.get(FundRequest, request_id)
        assert row is not None
        assert row.amount == Decimal(amount) and row.startup_grant == Decimal(amount)
        assert str(row.amount) == str(Decimal(amount).quantize(Decimal("0.01")))
        stored = session.execute(
            text("SELECT amount_hundredths FROM fundrequest WHERE id = :id"), {"id": request_id}
        ).scalar_one()
    assert stored == int(Decimal(amount) * 100)


@pytest.mark.parametrize("amount", ["0.001", "0", "-5", "1000000000000.00", "NaN", "Infinity"])
def test_amounts_that_hundredths_cannot_hold_are_refused(amount: str) -> None:
    with pytest.raises(MoneyError):
        to_hundredths(Decimal(amount))


# -- messages ------------------------------------------------------------------------------------


def test_submission_and_decisions_reach_hq_and_trusted_contacts_and_the_rest_only_hq(
    world: World,
) -> None:
    request_id = submitted(world)
    with world.session() as session:
        service.edit(session, request_id, FundRequestUpdate(amount=Decimal("1600")), "a", NOW)
        session.commit()
    move(world, request_id, R, A, D)

    told = [(d.kind, d.recipient) for d in fund_messages(world, request_id)]
    assert told == [
        ("fund_submitted", "HQ desk"), ("fund_submitted", "Sister"),
        ("fund_updated", "HQ desk"),
        ("fund_state", "HQ desk"),  # under review: HQ only
        ("fund_state", "HQ desk"), ("fund_state", "Sister"),  # approved
        ("fund_state", "HQ desk"), ("fund_state", "Sister"),  # paid out
    ]  # fmt: skip
    rows = fund_messages(world, request_id)
    assert all(d.alarm_pk is None and d.status == "pending" for d in rows)
    events = {e.id: e for e in trail(world, request_id)}
    for row in rows:
        _, request, event_id, target = row.key.split(":", 3)
        assert request == str(request_id) and int(event_id) in events
        assert target == f"contact:{row.contact_id}"


def test_messages_give_reference_purpose_amount_and_state_in_the_recipients_language(
    world: World,
) -> None:
    ana_alarm = world.alarm_of(world.ana, "al-1")
    request_id = submitted(world, alarm_id=ana_alarm, startup_grant=Decimal("250"))
    move(world, request_id, X)
    hq_rejected, sister_rejected = fund_messages(world, request_id)[-2:]
    assert hq_rejected.title == f"Emergency fund: request F{request_id} for Ana rejected"
    assert "Purpose: temporary relocation" in hq_rejected.body
    assert "Amount: 1500.00 EUR" in hq_rejected.body
    assert f"Reference: F{request_id}" in hq_rejected.body
    assert sister_rejected.language == "es"
    assert (
        sister_rejected.title == f"Fondo de emergencia: solicitud F{request_id} de Ana: rechazada"
    )
    assert "Finalidad: reubicación temporal" in sister_rejected.body
    for row in (hq_rejected, sister_rejected):  # the alarm's position never goes with it
        text_ = row.title + row.body + row.short
        assert "43.3178" not in text_ and "openstreetmap" not in text_


def test_the_other_defenders_contacts_hear_nothing(world: World) -> None:
    request_id = submitted(world)
    move(world, request_id, R, A)
    assert "Brother" not in {d.recipient for d in fund_messages(world, request_id)}


def test_a_fund_message_that_no_channel_delivers_alerts_hq_naming_the_request(
    world: World,
) -> None:
    request_id = submitted(world)
    store = world.store
    jobs = [job for job in store.claim_pending() if job.alarm_pk is None]
    to_sister = next(job for job in jobs if job.notification.recipient == "Sister")
    assert to_sister.notification.alarm_ref == f"F{request_id}"
    store.finish_delivery(
        to_sister.delivery_id, DeliveryResult.failure("mailbox gone", permanent=True)
    )
    with world.session() as session:
        dead = session.get(Delivery, to_sister.delivery_id)
        alerts = session.exec(select(Delivery).where(Delivery.kind == "dead_letter")).all()
    assert dead is not None and dead.status == "dead"
    (alert,) = alerts
    assert alert.recipient == "HQ desk" and alert.alarm_pk is None
    assert f"fund request F{request_id}" in alert.body and "fund_submitted message" in alert.body


# -- two reviewers at the same moment ------------------------------------------------------------


def _signal_on_contended_statement(engine: Engine, reached: threading.Event) -> None:
    """Set ``reached`` when ``engine`` runs the statement that waits for the other transaction:
    PostgreSQL's ``SELECT ... FOR UPDATE``; on SQLite (no FOR UPDATE) the compare-and-set
    ``UPDATE``, after its read of the request has already seen the state before the race."""

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sql = " ".join(statement.split()).upper()
        if sql.startswith("UPDATE FUNDREQUEST ") or (
            "FROM FUNDREQUEST" in sql and "FOR UPDATE" in sql
        ):
            reached.set()


def _edit(session: Session, request_id: int) -> object:
    return service.edit(session, request_id, FundRequestUpdate(amount=Decimal("9999")), "e", NOW)


#: (what the first reviewer does, what the second tries at the same moment). After the first,
#: the second is not allowed: the same step again, an edit after review began, or any step
#: after a final rejection.
RACES = {
    "the same transition twice": (R, lambda s, rid: service.transition(s, rid, R, "", "hq-2", NOW)),
    "an edit as review begins": (R, _edit),
    "review as it is rejected": (X, lambda s, rid: service.transition(s, rid, R, "", "hq-2", NOW)),
}


@pytest.mark.parametrize("race", list(RACES))
def test_of_two_changes_racing_on_one_request_only_the_first_wins(
    world: World, database_url: str, race: str
) -> None:
    first_state, second_action = RACES[race]
    request_id = submitted(world)
    other_engine = make_engine(database_url)
    reached = threading.Event()
    _signal_on_contended_statement(other_engine, reached)
    outcome: dict[str, object] = {}

    def second() -> None:
        with Session(other_engine) as session:
            try:
                second_action(session, request_id)
                session.commit()
                outcome["won"] = True
            except Exception as exc:
                outcome["error"] = exc

    with world.session() as first:
        service.transition(first, request_id, first_state, "", "hq-1", NOW)  # holds the row
        racer = threading.Thread(target=second)
        racer.start()
        assert reached.wait(30), "the second change never reached the database"
        first.commit()
    racer.join(60)
    other_engine.dispose()

    assert not racer.is_alive()
    error = outcome.get("error")
    assert isinstance(error, FundConflict), outcome
    assert error.code in {"transition_not_allowed", "not_editable", "changed_meanwhile"}
    assert state_of(world, request_id) == first_state
    assert [(e.action, e.actor) for e in trail(world, request_id)] == [
        ("created", "api:intake"), ("state", "hq-1"),
    ]  # fmt: skip
    with world.session() as session:
        row = session.get(FundRequest, request_id)
        assert row is not None and row.amount == Decimal("1500.00")
    told = [d.recipient for d in fund_messages(world, request_id) if d.kind == "fund_state"]
    assert told == (["HQ desk"] if first_state is R else ["HQ desk", "Sister"])
