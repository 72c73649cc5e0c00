"""``/v1/fund-requests`` on a real hub: submission by a partner's integration, review by HQ, the
audit trail, and the messages the running hub delivers to a real HTTP receiver and SMTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from devicekit.protocol import utcnow
from hub import admin
from hub.db import make_engine
from hub.models import Alarm, Delivery, Device
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from sdk.models import ApiRole, FundRequest, FundRequestEvent
from tests.support.api import ApiHub
from tests.support.receivers import HTTPReceiver, SMTPReceiver, wait_until

INTEGRATION, HQ, READ_ONLY = ApiRole.INTEGRATION, ApiRole.HQ, ApiRole.READ_ONLY


@dataclass
class People:
    api: ApiHub
    ana: int  #: a defender whose sister (Spanish, e-mail) is a trusted contact
    ben: int  #: another defender, with no contacts
    ana_alarm: int
    ben_alarm: int
    hq_inbox: HTTPReceiver  #: HQ's JSON webhook
    sister_inbox: SMTPReceiver

    def hq_titles(self) -> list[str]:
        return [json.loads(request.body)["title"] for request in self.hq_inbox.requests]

    def hq_message(self, title: str) -> dict[str, Any]:
        for request in list(self.hq_inbox.requests):
            payload: dict[str, Any] = json.loads(request.body)
            if payload["title"] == title:
                return payload
        raise AssertionError(f"HQ has no message {title!r}: {self.hq_titles()}")

    def sister_subjects(self) -> list[str]:
        return [str(mail.message["Subject"]) for mail in list(self.sister_inbox.messages)]

    def submit(self, defender_id: int | None = None, **overrides: Any) -> dict[str, Any]:
        with self.api.client(INTEGRATION) as client:
            response = client.post(
                "/v1/fund-requests", json=new_request(defender_id or self.ana, **overrides)
            )
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()
        return made

    def step(self, request_id: int, state: str, note: str = "") -> httpx.Response:
        with self.api.client(HQ) as client:
            return client.post(
                f"/v1/fund-requests/{request_id}/transitions", json={"state": state, "note": note}
            )


def new_request(defender_id: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "defender_id": defender_id,
        "purpose": "temporary_relocation",
        "amount": "1500.00",
        "currency": "EUR",
        "description": "Two months in a safe flat",
    }
    body.update(overrides)
    return body


def _alarm(engine: Engine, defender_id: int, device_id: str) -> int:
    """A closed alarm of ``defender_id``, stored directly (these tests are about the fund)."""
    with Session(engine) as session:
        session.add(Device(id=device_id, defender_id=defender_id))
        session.flush()
        alarm = Alarm(
            device_id=device_id,
            defender_id=defender_id,
            alarm_id=f"{device_id}-1",
            kind="panic",
            state="resolved",
            device_ts=utcnow(),
            seq=1,
        )
        session.add(alarm)
        session.commit()
        assert alarm.id is not None
        return alarm.id


@pytest.fixture(scope="module")
def people(api: ApiHub) -> Iterator[People]:
    """Ana and Ben with an alarm each, HQ on a JSON webhook and Ana's sister on e-mail,
    registered the way an operator does (``hub.admin``)."""
    hq_inbox, sister_inbox = HTTPReceiver().start(), SMTPReceiver().start()
    engine = make_engine(api.database_url)
    registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
    try:
        with api.client(HQ) as client:
            ana = client.post("/v1/defenders", json={"name": "Ana"}).json()["id"]
            ben = client.post("/v1/defenders", json={"name": "Ben"}).json()["id"]
        hq_url = f"json://127.0.0.1:{hq_inbox.port}/fund"
        admin.add_contact(engine, registry, "HQ desk", hq_url, None)
        sister_url = sister_inbox.url("sister@example.org")
        admin.add_contact(engine, registry, "Sister", sister_url, ana, language="es")
        ana_alarm, ben_alarm = _alarm(engine, ana, "wb-ana"), _alarm(engine, ben, "wb-ben")
        yield People(api, ana, ben, ana_alarm, ben_alarm, hq_inbox, sister_inbox)
    finally:
        engine.dispose()
        hq_inbox.stop()
        sister_inbox.stop()


# -- the whole way -------------------------------------------------------------------------------


def test_a_request_goes_from_submission_through_review_to_payment(people: People) -> None:
    made = people.submit(alarm_id=people.ana_alarm, startup_grant="250.5")
    request_id = made["id"]
    assert made["state"] == "submitted" and made["created_by"] == "api:test-integration"
    assert (made["amount"], made["startup_grant"], made["currency"]) == ("1500.00", "250.50", "EUR")
    assert FundRequest.model_validate(made).alarm_id == people.ana_alarm

    for state, note in [("under_review", "calling Ana"), ("approved", "ok"), ("disbursed", "")]:
        moved = people.step(request_id, state, note)
        assert moved.status_code == 200, moved.text
        assert moved.json()["state"] == state

    with people.api.client(READ_ONLY) as client:
        got = client.get(f"/v1/fund-requests/{request_id}").json()
        history = client.get(f"/v1/fund-requests/{request_id}/history").json()
    assert got["state"] == "disbursed" and got["updated_at"] >= got["created_at"]
    trail = [FundRequestEvent.model_validate(event) for event in history]
    assert [(e.action, e.actor, e.from_state, e.to_state, e.note) for e in trail] == [
        ("created", "api:test-integration", None, "submitted", ""),
        ("state", "api:test-hq", "submitted", "under_review", "calling Ana"),
        ("state", "api:test-hq", "under_review", "approved", "ok"),
        ("state", "api:test-hq", "approved", "disbursed", ""),
    ]
    assert [e.at for e in trail] == sorted(e.at for e in trail)


def test_hq_hears_of_every_step_and_the_sister_of_submission_and_decisions(
    people: People,
) -> None:
    request_id = people.submit(purpose="security_solutions", amount="820")["id"]
    with people.api.client(INTEGRATION) as client:
        edited = client.patch(f"/v1/fund-requests/{request_id}", json={"amount": "990.00"})
    assert edited.status_code == 200, edited.text
    for state in ("under_review", "approved", "disbursed"):
        assert people.step(request_id, state).status_code == 200

    ref = f"F{request_id}"
    hq_expected = [
        f"Emergency fund: request {ref} submitted for Ana",
        f"Emergency fund: request {ref} for Ana changed",
        f"Emergency fund: request {ref} for Ana under review",
        f"Emergency fund: request {ref} for Ana approved",
        f"Emergency fund: request {ref} for Ana paid out",
    ]
    wait_until(lambda: set(hq_expected) <= set(people.hq_titles()), 30)
    approved = people.hq_message(hq_expected[3])
    assert "Purpose: security solutions" in approved["message"]
    assert "Amount: 990.00 EUR" in approved["message"]
    assert f"Reference: {ref}" in approved["message"]

    sister_expected = [
        f"Fondo de emergencia: solicitud {ref} presentada para Ana",
        f"Fondo de emergencia: solicitud {ref} de Ana: aprobada",
        f"Fondo de emergencia: solicitud {ref} de Ana: pagada",
    ]
    wait_until(lambda: set(sister_expected) <= set(people.sister_subjects()), 30)
    mine = [s for s in people.sister_subjects() if f"solicitud {ref} " in s]
    assert sorted(mine) == sorted(sister_expected)  # not the edit, not "under review"
    submitted = next(
        mail for mail in people.sister_inbox.messages
        if mail.message["Subject"] == sister_expected[0]
    )  # fmt: skip
    assert "Finalidad: soluciones de seguridad" in submitted.text
    assert "Importe: 820.00 EUR" in submitted.text  # as it was when submitted

    engine = make_engine(people.api.database_url)

    def outbox() -> list[Delivery]:
        with Session(engine) as session:
            query = select(Delivery).where(col(Delivery.key).startswith(f"fund:{request_id}:"))
            return list(session.exec(query))

    try:  # the hub records each result just after the receiver has the message
        wait_until(lambda: all(row.status == "sent" for row in outbox()), 30)
        rows = outbox()
    finally:
        engine.dispose()
    assert len(rows) == 8 and all(row.alarm_pk is None for row in rows)


# -- who may do what -----------------------------------------------------------------------------


def test_the_integration_role_submits_but_cannot_review(people: People) -> None:
    request_id = people.submit()["id"]
    with people.api.client(INTEGRATION) as client:
        refused = client.post(
            f"/v1/fund-requests/{request_id}/transitions", json={"state": "approved"}
        )
        assert client.get(f"/v1/fund-requests/{request_id}").status_code == 200
    assert refused.status_code == 403 and "fund:review" in refused.json()["detail"]
    with people.api.client(READ_ONLY) as client:
        assert client.post("/v1/fund-requests", json=new_request(people.ana)).status_code == 403
    with people.api.client(None) as client:
        assert client.get("/v1/fund-requests").status_code == 401


# -- refusals ------------------------------------------------------------------------------------


def test_a_step_the_review_does_not_allow_is_a_409_naming_the_allowed_ones(
    people: People,
) -> None:
    request_id = people.submit()["id"]
    skipped = people.step(request_id, "disbursed")
    assert skipped.status_code == 409
    assert skipped.json()["code"] == "transition_not_allowed"
    assert skipped.json()["detail"] == (
        f"request {request_id} is submitted: it can become under_review or rejected, not disbursed"
    )
    assert people.step(request_id, "rejected", "no documents").status_code == 200
    final = people.step(request_id, "under_review")
    assert final.status_code == 409 and "final" in final.json()["detail"]


def test_a_request_is_edited_only_while_submitted(people: People) -> None:
    request_id = people.submit()["id"]
    path = f"/v1/fund-requests/{request_id}"
    with people.api.client(INTEGRATION) as client:
        changed = client.patch(
            path, json={"currency": "USD", "startup_grant": "100", "description": "Three months"}
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["currency"], changed.json()["startup_grant"]) == ("USD", "100.00")
        assert client.patch(path, json={"amount": None}).status_code == 422
        assert people.step(request_id, "under_review").status_code == 200
        late = client.patch(path, json={"amount": "1.00"})
        history = client.get(f"{path}/history").json()
    assert late.status_code == 409 and late.json()["code"] == "not_editable"
    updated = [event for event in history if event["action"] == "updated"]
    assert [event["note"] for event in updated] == [
        "currency: EUR -> USD; startup_grant: none -> 100.00; description changed"
    ]


def test_unknown_requests_are_404(people: People) -> None:
    with people.api.client(HQ) as client:
        responses = [
            client.get("/v1/fund-requests/999999"),
            client.patch("/v1/fund-requests/999999", json={"amount": "5"}),
            client.post("/v1/fund-requests/999999/transitions", json={"state": "approved"}),
            client.get("/v1/fund-requests/999999/history"),
        ]
    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert all(r.json()["detail"] == "no fund request 999999" for r in responses)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"defender_id": 999999}, "no defender 999999"),
        ({"alarm_id": 999999}, "no alarm 999999"),
        ({"amount": "10.001"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": 1e20}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"purpose": "holiday"}, "purpose"),
        ({"state": "approved"}, "state"),
    ],
)
def test_a_request_that_does_not_fit_is_a_422(
    people: People, overrides: dict[str, Any], expected: str
) -> None:
    # HQ is told what does not hold; a partner system is not (test_api_integration_role.py).
    with people.api.client(HQ) as client:
        response = client.post("/v1/fund-requests", json={**new_request(people.ana), **overrides})
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]


def test_a_request_cannot_follow_another_defenders_alarm(people: People) -> None:
    with people.api.client(HQ) as client:
        response = client.post(
            "/v1/fund-requests", json=new_request(people.ana, alarm_id=people.ben_alarm)
        )
    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"alarm {people.ben_alarm} is not an alarm of defender {people.ana}"
    )


# -- lists ---------------------------------------------------------------------------------------


def test_requests_are_listed_newest_first_and_filtered(people: People) -> None:
    first = people.submit(people.ben, purpose="information_protection")["id"]
    second = people.submit(people.ben, alarm_id=people.ben_alarm)["id"]
    third = people.submit(people.ben, purpose="information_protection")["id"]
    assert people.step(third, "rejected").status_code == 200

    def ids(**params: Any) -> list[int]:
        with people.api.client(READ_ONLY) as client:
            page = client.get("/v1/fund-requests", params={"defender_id": people.ben, **params})
        assert page.status_code == 200, page.text
        return [item["id"] for item in page.json()["items"]]

    assert ids() == [third, second, first]
    assert ids(purpose="information_protection") == [third, first]
    assert ids(state="submitted") == [second, first]
    assert ids(alarm_id=people.ben_alarm) == [second]
    assert ids(state="rejected", purpose="temporary_relocation") == []
    with people.api.client(READ_ONLY) as client:
        page = client.get("/v1/fund-requests", params={"defender_id": people.ben, "limit": 2})
        rest = client.get(
            "/v1/fund-requests",
            params={"defender_id": people.ben, "cursor": page.json()["next_cursor"]},
        )
        bad = client.get("/v1/fund-requests", params={"state": "paid"})
    assert [item["id"] for item in rest.json()["items"]] == [first]
    assert bad.status_code == 422


# -- at the same moment --------------------------------------------------------------------------


def test_of_reviewers_approving_one_request_at_once_exactly_one_succeeds(people: People) -> None:
    request_id = people.submit()["id"]
    assert people.step(request_id, "under_review").status_code == 200
    reviewers = 6
    start = threading.Barrier(reviewers)
    statuses: list[int] = []

    def approve() -> None:
        start.wait()
        statuses.append(people.step(request_id, "approved").status_code)

    threads = [threading.Thread(target=approve) for _ in range(reviewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200] + [409] * (reviewers - 1)
    with people.api.client(READ_ONLY) as client:
        history = client.get(f"/v1/fund-requests/{request_id}/history").json()
    assert [event["to_state"] for event in history].count("approved") == 1
