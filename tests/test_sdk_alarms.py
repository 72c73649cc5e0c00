"""Alarms through the SDK on a real hub: real wristband alarms over MQTT, HQ's actions, the
timeline, deliveries, rejected messages and the live stream, with ``Client`` and ``AsyncClient``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from devicekit.protocol import AlarmKind
from sdk import AsyncClient, Client, ConflictError, NotFoundError
from sdk.models import AlarmEvent, AlarmState, ApiRole, EscalationResult
from tests.support.api import ApiHub
from tests.support.device import RawDevice
from tests.support.receivers import wait_until
from tests.support.sdk import MODES, Both, raise_alarm, unique, wristband


@pytest.fixture(params=MODES)
def sdk(api: ApiHub, request: pytest.FixtureRequest) -> Iterator[Both]:
    both = Both(api, request.param)
    yield both
    both.close()


@pytest.fixture
def hq(api: ApiHub) -> Iterator[Both]:
    """For tests that need the SDK to set things up but test something else."""
    both = Both(api, "sync")
    yield both
    both.close()


@pytest.fixture
def wristbands() -> Iterator[list[RawDevice]]:
    made: list[RawDevice] = []
    yield made
    for device in made:
        device.close()


def test_hq_acts_on_an_alarm_by_its_reference(sdk: Both, wristbands: list[RawDevice]) -> None:
    device = wristband(sdk, wristbands)
    alarm = raise_alarm(sdk, device)
    ref = alarm.ref
    assert ref == f"A{alarm.id}" and sdk(lambda c: c.alarms.get(ref)) == sdk(
        lambda c: c.alarms.get(alarm.id)
    )
    acked = sdk(lambda c: c.alarms.acknowledge(ref, note="Calling her sister"), ApiRole.HQ)
    assert acked.state == AlarmState.ACKNOWLEDGED and acked.acknowledged_at is not None
    verified = sdk(lambda c: c.alarms.verify(alarm.id), ApiRole.HQ)
    assert verified.state == AlarmState.VERIFIED
    escalated = sdk(lambda c: c.alarms.escalate(ref.lower()), ApiRole.HQ)
    assert isinstance(escalated, EscalationResult) and escalated.alarm.id == alarm.id
    resolved = sdk(lambda c: c.alarms.resolve(ref, note="She is safe"), ApiRole.HQ)
    assert resolved.state == AlarmState.RESOLVED and resolved.closed_at is not None
    with pytest.raises(ConflictError) as caught:
        sdk(lambda c: c.alarms.false_alarm(ref), ApiRole.HQ)
    assert ref in caught.value.detail

    timeline = sdk(lambda c: c.alarms.events(ref))
    assert all(isinstance(e, AlarmEvent) and e.alarm_ref == ref for e in timeline)
    notes = [e.detail for e in timeline if e.kind == "note"]
    assert notes == ["Calling her sister", "She is safe"]
    assert {"received", "acknowledged", "verified", "resolved"} <= {e.kind for e in timeline}
    assert sdk(lambda c: c.alarm_events.iter(alarm_id=ref, page_size=2)) == timeline
    later = sdk(lambda c: c.alarm_events.list(alarm_id=alarm.id, after=timeline[1].id))
    assert later.items == timeline[2:]


def test_a_false_alarm_closes_it(sdk: Both, wristbands: list[RawDevice]) -> None:
    alarm = raise_alarm(sdk, wristband(sdk, wristbands))
    closed = sdk(lambda c: c.alarms.false_alarm(alarm.ref), ApiRole.HQ)
    assert closed.state == AlarmState.FALSE_ALARM


def test_alarms_are_filtered_newest_first(sdk: Both, wristbands: list[RawDevice]) -> None:
    defender_id = sdk(lambda c: c.defenders.create(name=unique("Filtered"))).id
    device = wristband(sdk, wristbands, defender_id)
    since = datetime.now(UTC) - timedelta(minutes=1)
    panic = raise_alarm(sdk, device)
    fall = raise_alarm(sdk, device, AlarmKind.FALL)
    sdk(lambda c: c.alarms.resolve(panic.id), ApiRole.HQ)
    mine = sdk(lambda c: c.alarms.iter(defender_id=defender_id, page_size=1))
    assert [a.id for a in mine] == [fall.id, panic.id]
    assert [a.id for a in sdk(lambda c: c.alarms.iter(defender_id=defender_id, kind="fall"))] == [
        fall.id
    ]
    open_ = sdk(lambda c: c.alarms.list(defender_id=defender_id, state=["received", "notified"]))
    assert [a.id for a in open_.items] == [fall.id]
    resolved = sdk(lambda c: c.alarms.list(defender_id=defender_id, state=AlarmState.RESOLVED))
    assert [a.id for a in resolved.items] == [panic.id]
    recent = sdk(lambda c: c.alarms.list(defender_id=defender_id, since=since))
    assert [a.id for a in recent.items] == [fall.id, panic.id]
    assert sdk(lambda c: c.alarms.list(defender_id=defender_id, until=since)).items == []


def test_deliveries_are_listed_per_alarm_and_overall(
    sdk: Both, wristbands: list[RawDevice]
) -> None:
    defender_id = sdk(lambda c: c.defenders.create(name=unique("Delivered"))).id
    sdk(
        lambda c: c.contacts.create(
            name="HQ desk", channel_url="console://", defender_id=defender_id
        )
    )
    alarm = raise_alarm(sdk, wristband(sdk, wristbands, defender_id))
    rows = wait_until(lambda: sdk(lambda c: c.alarms.deliveries(alarm.ref)))
    assert {(d.alarm_id, d.kind, d.recipient) for d in rows} == {(alarm.id, "alarm", "HQ desk")}
    overall = sdk(lambda c: c.deliveries.iter(alarm_id=alarm.ref, kind="alarm"))
    assert [d.id for d in overall] == [d.id for d in rows]
    assert sdk(lambda c: c.deliveries.list(alarm_id=alarm.id, kind="resolved")).items == []


def test_rejected_messages_are_listed_and_reviewed(sdk: Both, wristbands: list[RawDevice]) -> None:
    device = wristband(sdk, wristbands)
    assert device.publish("alarm", b'{"not": "json",}') == "Success"  # signed, not JSON
    assert device.publish("alarm", b'{"v": 1}', signed=False) == "Success"  # unsigned

    def refused():
        waiting = sdk(lambda c: c.rejected_messages.iter(reviewed=False))
        return next((m for m in waiting if m.device_id == device.device_id), None)

    def suspicious():
        flagged = sdk(lambda c: c.rejected_messages.list(suspicious=True, limit=200)).items
        return [m for m in flagged if m.device_id == device.device_id]

    [forged] = wait_until(suspicious)
    assert forged.suspicious and "unsigned" in forged.reason
    sdk(lambda c: c.rejected_messages.review(forged.id), ApiRole.HQ)
    message = wait_until(refused)
    assert not message.suspicious and "Invalid JSON" in message.reason
    reviewed = sdk(lambda c: c.rejected_messages.review(message.id), ApiRole.HQ)
    assert reviewed.reviewed_at is not None and refused() is None
    done = sdk(lambda c: c.rejected_messages.list(reviewed=True, limit=200)).items
    assert message.id in [m.id for m in done]


def test_unknown_alarms_are_not_found(sdk: Both) -> None:
    with pytest.raises(NotFoundError):
        sdk(lambda c: c.alarms.get("A999999"))
    with pytest.raises(NotFoundError):
        sdk(lambda c: c.alarms.acknowledge(999_999), ApiRole.HQ)
    with pytest.raises(ValueError, match="A12"):
        sdk(lambda c: c.alarms.get("B12"))


# -- the live stream (the hub's own) ----------------------------------------------------------


def test_the_hubs_stream_yields_typed_events_and_follows_one_alarm(
    api: ApiHub, hq: Both, wristbands: list[RawDevice]
) -> None:
    device = wristband(hq, wristbands)
    alarm = raise_alarm(hq, device)
    other = raise_alarm(hq, device, AlarmKind.FALL)
    hq(lambda c: c.alarms.acknowledge(other.id), ApiRole.HQ)
    hq(lambda c: c.alarms.acknowledge(alarm.id, note="on it"), ApiRole.HQ)
    # The read-only role's list and stream agree (both name roles, not people).
    timeline = hq(lambda c: c.alarms.events(alarm.id), ApiRole.READ_ONLY)
    with (
        Client(api.base_url, api.tokens[ApiRole.READ_ONLY]) as client,
        client.stream_alarm_events(alarm_id=alarm.ref, after=0) as stream,
    ):
        streamed = [next(stream) for _ in timeline]
    assert streamed == timeline


def test_the_hubs_stream_resumes_after_an_event_with_hqs_next_action(
    api: ApiHub, hq: Both, wristbands: list[RawDevice]
) -> None:
    alarm = raise_alarm(hq, wristband(hq, wristbands))
    last = hq(lambda c: c.alarms.events(alarm.id))[-1].id

    async def listen_and_act() -> AlarmEvent:
        with anyio.fail_after(20):
            async with (
                AsyncClient(api.base_url, api.tokens[ApiRole.HQ]) as client,
                client.stream_alarm_events(after=last, alarm_id=alarm.id) as stream,
            ):
                await client.alarms.verify(alarm.ref)
                async for event in stream:
                    if event.kind == "verified":
                        return event
        raise AssertionError("the stream ended")

    verified = anyio.run(listen_and_act)
    assert (verified.alarm_id, verified.actor) == (alarm.id, "api:test-hq")
