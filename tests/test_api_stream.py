"""The live stream of alarm events: a real hub, a real wristband alarm over MQTT, a real HTTP
client reading ``text/event-stream``; and the shared poller on a real database."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from hub.api.broadcast import Broadcaster
from hub.db import make_engine
from hub.tail import Settler
from sdk.models import AlarmEvent as AlarmEventModel
from sdk.models import ApiRole
from tests.support.api import ApiHub, api_hub
from tests.support.live import ServerSentEvent, add_events, alarm_row, open_stream, raise_alarm
from tests.support.receivers import HTTPReceiver


def _timeline(client: httpx.Client, alarm_id: int) -> list[tuple[int, str]]:
    events = client.get(f"/v1/alarms/{alarm_id}/events").json()
    return [(e["id"], e["kind"]) for e in events]


def _events_of(
    stream: Iterator[ServerSentEvent], alarm_id: int, until: str | int
) -> list[AlarmEventModel]:
    """The stream's events of one alarm, up to and including the first of kind ``until`` (or
    the one with the id ``until``)."""
    found = []
    for message in stream:
        if not message.is_event:
            continue
        model = AlarmEventModel.model_validate_json("\n".join(message.data))
        assert message.id == str(model.id) and message.event == model.kind
        if model.alarm_id == alarm_id:
            found.append(model)
            if until in (model.kind, model.id):
                return found
    raise AssertionError("the stream ended")


def test_an_alarm_from_a_wristband_streams_its_timeline_live_in_order(
    api: ApiHub, http_receiver: HTTPReceiver
) -> None:
    with api.client(ApiRole.HQ) as client, open_stream(client) as stream:
        first = next(stream)
        assert first.retry is not None and not first.is_event and first.id is not None
        alarm_id = raise_alarm(
            api, "wb-live", {"Sister": f"json://127.0.0.1:{http_receiver.port}/a"}
        )
        seen = _events_of(stream, alarm_id, until="notified")
        timeline = _timeline(client, alarm_id)
    assert [(e.id, e.kind) for e in seen] == timeline[: len(seen)]
    assert seen[0].kind == "received" and seen[-1].kind == "notified"
    assert all(e.alarm_ref == f"A{alarm_id}" for e in seen)


def test_a_resumed_stream_gets_exactly_the_missed_events(api: ApiHub) -> None:
    alarm_id = raise_alarm(api, "wb-resume")
    with api.client(ApiRole.HQ) as client:
        before = _timeline(client, alarm_id)
        last_seen = before[-1][0]
        for action in ("acknowledge", "verify", "resolve"):  # while nobody listens
            response = client.post(f"/v1/alarms/{alarm_id}/{action}", json={"note": action})
            assert response.status_code == 200, response.text
        missed = [e for e in _timeline(client, alarm_id) if e[0] > last_seen]
        headers = {"Last-Event-ID": str(last_seen)}
        # ?after= is what a first connection asks; a reconnect's Last-Event-ID wins over it.
        with open_stream(client, headers=headers, params={"after": 0}) as stream:
            got = _events_of(stream, alarm_id, until=missed[-1][0])
        with open_stream(client, params={"after": last_seen, "alarm_id": alarm_id}) as stream:
            filtered = _events_of(stream, alarm_id, until=missed[-1][0])
    assert [(e.id, e.kind) for e in got] == missed
    assert [(e.id, e.kind) for e in filtered] == missed
    assert {"acknowledged", "verified", "resolved"} <= {kind for _, kind in missed}


def test_an_hq_action_through_the_api_shows_up_live(api: ApiHub) -> None:
    alarm_id = raise_alarm(api, "wb-ack")
    with (
        api.client(ApiRole.READ_ONLY) as watcher,
        api.client(ApiRole.HQ) as hq,
        open_stream(watcher, params={"alarm_id": alarm_id}) as stream,
    ):
        response = hq.post(f"/v1/alarms/{alarm_id}/acknowledge", json={"note": "on it"})
        assert response.status_code == 200, response.text
        [*_, acknowledged] = _events_of(stream, alarm_id, until="acknowledged")
    assert acknowledged.actor == "hq"  # the read-only role is told roles, not who


def test_no_token_is_a_401_and_the_integration_role_a_403(api: ApiHub) -> None:
    for role, status in ((None, 401), (ApiRole.INTEGRATION, 403)):
        with api.client(role) as client:
            response = client.get("/v1/alarm-events/stream")
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"


def test_a_bad_resume_point_or_unknown_alarm_is_a_problem_not_a_stream(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        bad = client.get("/v1/alarm-events/stream", headers={"Last-Event-ID": "abc"})
        unknown = client.get("/v1/alarm-events/stream", params={"alarm_id": 999_999})
        negative = client.get("/v1/alarm-events/stream", params={"after": -1})
    assert (bad.status_code, bad.json()["code"]) == (400, "bad_last_event_id")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert negative.status_code == 422


def test_open_streams_end_cleanly_when_the_hub_stops(tmp_path: Path) -> None:
    with api_hub(tmp_path) as hub:
        client = hub.client(ApiRole.HQ)
        with client, open_stream(client) as stream:
            assert next(stream).retry is not None
            stopping = threading.Thread(target=hub.running.stop)
            stopping.start()
            rest = list(stream)  # ends; a connection cut off mid-stream would raise here
            stopping.join()
        assert not any(message.is_event for message in rest)


# -- the shared poller, on a real SQLite database -----------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'stream.db'}")
    yield engine
    engine.dispose()


def _ids(frames: list[bytes]) -> list[int]:
    return [int(f.split(b"\n", 1)[0].removeprefix(b"id: ")) for f in frames if f.startswith(b"id:")]


async def _collect(broadcaster: Broadcaster, after: int, count: int) -> list[bytes]:
    frames: list[bytes] = []
    async for frame in broadcaster.listen(after, None, keepalive_s=60):
        frames.append(frame)
        if len(_ids(frames)) == count:
            break
    return frames


def test_many_listeners_share_one_query_per_poll(engine: Engine) -> None:
    alarm_id = alarm_row(engine)
    selects: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM alarmevent" in statement:
            selects.append(statement)

    async def scenario() -> list[list[int]]:
        broadcaster = Broadcaster(engine, poll_s=0.05)
        start = add_events(engine, alarm_id, 1)[0]
        listeners = [asyncio.create_task(_collect(broadcaster, start, 20)) for _ in range(100)]
        await asyncio.sleep(0)  # every listener is waiting for the poller
        event.listen(engine, "before_cursor_execute", count)
        await asyncio.to_thread(add_events, engine, alarm_id, 20)
        results = [_ids(frames) for frames in await asyncio.gather(*listeners)]
        event.remove(engine, "before_cursor_execute", count)
        broadcaster.close()
        return results

    results = asyncio.run(scenario())
    assert len({tuple(r) for r in results}) == 1 and len(results[0]) == 20
    assert results[0] == sorted(results[0])
    assert len(selects) < 100  # one query per poll, not one per listener


def test_a_listener_behind_the_buffer_catches_up_from_the_database(engine: Engine) -> None:
    alarm_id = alarm_row(engine)
    made = add_events(engine, alarm_id, 30)

    async def scenario() -> tuple[list[int], list[int]]:
        broadcaster = Broadcaster(engine, poll_s=0.01, buffer_size=5)
        live = asyncio.create_task(_collect(broadcaster, made[-1], 12))
        await asyncio.sleep(0)
        newer = await asyncio.to_thread(add_events, engine, alarm_id, 12)
        assert _ids(await live) == newer  # the buffer holds the last 5 only now
        late = _ids(await _collect(broadcaster, made[0], 41))
        broadcaster.close()
        return late, made[1:] + newer

    late, expected = asyncio.run(scenario())
    assert late == expected


def test_a_hole_in_the_ids_is_waited_for_then_stepped_over() -> None:
    now = [0.0]
    settler = Settler(grace_s=5, clock=lambda: now[0])
    assert settler.settle(10, [11, 12]) == 2
    assert settler.settle(12, [14, 15]) == 0  # 13 may still commit
    now[0] = 4.9
    assert settler.settle(12, [14, 15]) == 0
    assert settler.settle(12, [13, 14, 15]) == 3  # it did
    assert settler.settle(15, [17]) == 0
    now[0] = 9.8
    assert settler.settle(15, [17]) == 0
    now[0] = 10.0
    assert settler.settle(15, [17, 19]) == 1  # 16 rolled back; 18 is a new hole, waited for
    assert settler.settle(17, [19]) == 0


def test_a_filtered_listener_gets_keepalives_while_other_alarms_are_busy(engine: Engine) -> None:
    busy = alarm_row(engine, "wb-busy")
    quiet = alarm_row(engine, "wb-quiet")

    async def scenario() -> list[bytes]:
        broadcaster = Broadcaster(engine, poll_s=0.01)
        got: list[bytes] = []

        async def listen() -> None:
            async for frame in broadcaster.listen(0, quiet, keepalive_s=0.3):
                got.append(frame)
                return

        listener = asyncio.create_task(listen())
        while not listener.done():  # events of another alarm keep coming, faster than 0.3 s
            await asyncio.to_thread(add_events, engine, busy, 1)
            await asyncio.sleep(0.02)
        broadcaster.close()
        return got

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == [b": keepalive\n\n"]


def test_a_stream_dropped_before_its_first_event_resumes_without_a_gap(api: ApiHub) -> None:
    """The opening block's id is where a reconnecting client resumes (EventSource keeps it)."""
    with api.client(ApiRole.HQ) as client:
        with open_stream(client) as stream:
            opening = next(stream)
        assert opening.id is not None
        alarm_id = raise_alarm(api, "wb-gap")  # while no stream is open
        with open_stream(client, headers={"Last-Event-ID": opening.id}) as stream:
            next(stream)  # the new opening block
            seen = _events_of(stream, alarm_id, until="received")
    assert seen and seen[0].kind == "received"
