"""The SDK's workflows on a real hub, with ``Client`` and ``AsyncClient``: the emergency fund's
review, a Defenders' Days event from programme to training alarm, and signed webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from sdk import ConflictError, NotFoundError, PermissionDeniedError
from sdk.models import (
    Alarm,
    ApiRole,
    FundPurpose,
    FundState,
    ParticipantKind,
    SessionKind,
    WebhookEvent,
)
from sdk.webhooks import SIGNATURE_HEADER, verify_signature
from tests.support.api import ApiHub
from tests.support.device import RawDevice
from tests.support.receivers import HTTPReceiver, wait_until
from tests.support.sdk import MODES, Both, raise_alarm, unique, wristband

INTEGRATION, HQ = ApiRole.INTEGRATION, ApiRole.HQ


@pytest.fixture(params=MODES)
def sdk(api: ApiHub, request: pytest.FixtureRequest) -> Iterator[Both]:
    both = Both(api, request.param)
    yield both
    both.close()


def new_defender(sdk: Both) -> int:
    defender_id: int = sdk(lambda c: c.defenders.create(name=unique("Defender"))).id
    return defender_id


# -- emergency fund ------------------------------------------------------------------------------


def test_a_fund_request_is_submitted_edited_reviewed_and_disbursed(sdk: Both) -> None:
    defender_id = new_defender(sdk)
    made = sdk(
        lambda c: c.fund_requests.create(
            defender_id=defender_id,
            purpose="temporary_relocation",
            amount="1500",
            currency="EUR",
            startup_grant=Decimal("200.50"),
            description="Two months away from home",
        ),
        INTEGRATION,
    )
    assert (made.state, made.amount, made.startup_grant) == (
        FundState.SUBMITTED,
        Decimal("1500.00"),
        Decimal("200.50"),
    )
    edited = sdk(lambda c: c.fund_requests.update(made.id, amount=1750), INTEGRATION)
    assert edited.amount == Decimal("1750.00") and edited.startup_grant == Decimal("200.50")
    no_grant = sdk(lambda c: c.fund_requests.update(made.id, startup_grant=None), INTEGRATION)
    assert no_grant.startup_grant is None and no_grant.amount == Decimal("1750.00")

    with pytest.raises(PermissionDeniedError):
        sdk(lambda c: c.fund_requests.start_review(made.id), INTEGRATION)
    sdk(lambda c: c.fund_requests.start_review(made.id, note="checking the landlord"), HQ)
    sdk(lambda c: c.fund_requests.approve(made.id), HQ)
    with pytest.raises(ConflictError):
        sdk(lambda c: c.fund_requests.update(made.id, amount=10), INTEGRATION)
    with pytest.raises(ConflictError):
        sdk(lambda c: c.fund_requests.reject(made.id), HQ)
    paid = sdk(lambda c: c.fund_requests.disburse(made.id, note="wired"), HQ)
    assert paid.state == FundState.DISBURSED == sdk(lambda c: c.fund_requests.get(made.id)).state

    trail = sdk(lambda c: c.fund_requests.history(made.id))
    assert [(e.action, e.to_state) for e in trail] == [
        ("created", FundState.SUBMITTED),
        ("updated", None),
        ("updated", None),
        ("state", FundState.UNDER_REVIEW),
        ("state", FundState.APPROVED),
        ("state", FundState.DISBURSED),
    ]
    assert trail[3].note == "checking the landlord" and trail[3].actor == "api:test-hq"


def test_fund_requests_are_filtered(sdk: Both) -> None:
    defender_id = new_defender(sdk)

    def submit(purpose: FundPurpose) -> int:
        made = sdk(
            lambda c: c.fund_requests.create(
                defender_id=defender_id, purpose=purpose, amount="90", currency="USD"
            ),
            INTEGRATION,
        )
        return int(made.id)

    shelter = submit(FundPurpose.TEMPORARY_RELOCATION)
    laptop = submit(FundPurpose.INFORMATION_PROTECTION)
    sdk(lambda c: c.fund_requests.transition(laptop, FundState.REJECTED, note="duplicate"), HQ)
    mine = sdk(lambda c: c.fund_requests.iter(defender_id=defender_id, page_size=1))
    assert {r.id for r in mine} == {shelter, laptop}
    rejected = sdk(lambda c: c.fund_requests.list(defender_id=defender_id, state="rejected"))
    assert [r.id for r in rejected.items] == [laptop]
    housing = sdk(
        lambda c: c.fund_requests.list(defender_id=defender_id, purpose="temporary_relocation")
    )
    assert [r.id for r in housing.items] == [shelter]
    with pytest.raises(NotFoundError):
        sdk(lambda c: c.fund_requests.history(999_999))


# -- Defenders' Days -----------------------------------------------------------------------------


def test_an_event_from_programme_to_training_alarm(sdk: Both) -> None:
    defender_id = new_defender(sdk)
    event = sdk(
        lambda c: c.events.create(
            name=unique("Defenders' Days"),
            starts_on=date(2031, 5, 12),
            ends_on=date(2031, 5, 14),
            location="Vilnius",
        ),
        INTEGRATION,
    )
    assert event.id in [e.id for e in sdk(lambda c: c.events.iter(page_size=1))]
    assert sdk(lambda c: c.events.get(event.id)).location == "Vilnius"

    session = sdk(
        lambda c: c.events.add_session(
            event.id,
            title="Digital security",
            kind=SessionKind.TRAINING,
            starts_at=datetime(2031, 5, 12, 9, tzinfo=UTC),
            ends_at=datetime(2031, 5, 12, 11, tzinfo=UTC),
            room="B2",
        ),
        INTEGRATION,
    )
    assert sdk(lambda c: c.events.sessions(event.id)) == [session]

    defender = sdk(
        lambda c: c.events.register(
            event.id,
            kind=ParticipantKind.DEFENDER,
            defender_id=defender_id,
            channel_url="console://",
            needs={"visa_letter": True},
        ),
        HQ,  # only HQ links a registration to a defender
    )
    guest = sdk(lambda c: c.events.register(event.id, kind="guest", name="Journalist"), INTEGRATION)
    assert defender.needs.visa_letter and not guest.needs.visa_letter
    listed = sdk(lambda c: c.events.iter_registrations(event.id, page_size=1))
    assert [r.id for r in listed] == [defender.id, guest.id]
    assert sdk(lambda c: c.events.registration(event.id, guest.id)).name == "Journalist"
    cancelled = sdk(lambda c: c.events.cancel_registration(event.id, guest.id), INTEGRATION)
    assert cancelled.status == "cancelled"

    sent = sdk(
        lambda c: c.events.announce(event.id, title="Room change", body="Session 1 is in B3."),
        HQ,
    )
    assert sent.recipients == 1 and sent.short == "Room change"
    assert sdk(lambda c: c.events.announcements(event.id)) == [sent]

    started = sdk(lambda c: c.events.start_training(event.id), HQ)
    [kit] = started.kits
    assert started.active and kit.registration_id == defender.id and kit.password
    assert sdk(lambda c: c.events.training(event.id)).kits[0].password is None
    alarm = sdk(lambda c: c.events.training_alarm(event.id, registration_id=defender.id), HQ)
    assert isinstance(alarm, Alarm) and alarm.kind == "test" and alarm.device_id == kit.device_id
    ended = sdk(lambda c: c.events.end_training(event.id), HQ)
    assert ended.active is False
    with pytest.raises(PermissionDeniedError):  # kits are device credentials: HQ's only
        sdk(lambda c: c.events.start_training(event.id), INTEGRATION)
    with pytest.raises(ConflictError, match="training is off"):
        sdk(lambda c: c.events.training_alarm(event.id, registration_id=defender.id), HQ)


# -- webhooks ------------------------------------------------------------------------------------


@pytest.fixture
def wristbands() -> Iterator[list[RawDevice]]:
    made: list[RawDevice] = []
    yield made
    for device in made:
        device.close()


def test_a_webhook_receives_signed_events_until_deleted(
    sdk: Both, http_receiver: HTTPReceiver, wristbands: list[RawDevice]
) -> None:
    url = f"{http_receiver.base_url}/natalia"
    hook = sdk(lambda c: c.webhooks.create(url=url, events=["alarm.received"], description="ci"))
    assert hook.secret.startswith("whsec_") and hook.active
    assert sdk(lambda c: c.webhooks.get(hook.id)).events == ["alarm.received"]
    assert hook.id in [w.id for w in sdk(lambda c: c.webhooks.iter())]

    alarm = raise_alarm(sdk, wristband(sdk, wristbands))
    [request] = wait_until(lambda: http_receiver.requests)
    headers = {name.lower(): value for name, value in request.headers.items()}
    verify_signature(request.body, headers[SIGNATURE_HEADER.lower()], hook.secret)
    posted = WebhookEvent.model_validate_json(request.body)
    assert posted.type == "alarm.received" and posted.data["alarm"]["id"] == alarm.id

    delivered = wait_until(
        lambda: sdk(lambda c: c.webhooks.deliveries(hook.id, status="delivered")).items
    )
    assert [d.event_id for d in delivered] == [posted.id]
    assert sdk(lambda c: c.webhooks.iter_deliveries(hook.id)) == delivered

    assert sdk(lambda c: c.webhooks.delete(hook.id)) is None
    assert sdk(lambda c: c.webhooks.get(hook.id)).active is False
    with pytest.raises(PermissionDeniedError):
        sdk(lambda c: c.webhooks.list(), HQ)
