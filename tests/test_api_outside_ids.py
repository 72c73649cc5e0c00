"""Outside HQ, the ids of timeline events and deliveries count nothing (issue 11, item 9).

Event ids and delivery ids are sequences, and the rows only HQ sees after a duress code take
numbers from them too: whoever sees every alarm from outside HQ would see them as gaps. On a
quiet hub (one thing at a time, a real hub, broker, wristbands and HTTP receivers), one alarm
is cancelled with the real code and one with the duress code, HQ acting on each afterwards, and
then the next alarm comes. The read-only role's lists and pages, its live stream and a partner's
webhook must give ids from which the hidden rows cannot be counted, while paging, ``?after=``,
cursors and stream resumes with those ids lose and repeat nothing; HQ keeps the rows' own ids.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from sqlmodel import Session, col, select

from hub.db import make_engine
from hub.models import AlarmEvent, Delivery
from hub.outside_ids import outside_ids
from sdk.models import ApiRole
from tests.support.api import ApiHub, walk
from tests.support.duress import (
    CANCEL_CODE,
    DURESS_CODE,
    Wristband,
    add_hq_desk,
    hq_link,
    settle,
    stream_events,
)
from tests.support.live import add_events, alarm_row, open_stream
from tests.support.receivers import HTTPReceiver, wait_until

Row = TypeVar("Row", AlarmEvent, Delivery)


def ids(items: Sequence[dict[str, Any]], alarm_id: int | None = None) -> list[int]:
    return [item["id"] for item in items if alarm_id is None or item["alarm_id"] == alarm_id]


def since(events: list[dict[str, Any]], last_id: str | None) -> list[dict[str, Any]]:
    """The events after the one with id ``last_id`` ("0": all of them)."""
    if last_id == "0":
        return events
    return events[[str(event["id"]) for event in events].index(str(last_id)) + 1 :]


def hidden_rows_counted(items: Sequence[dict[str, Any]], alarm_id: int, next_alarm_id: int) -> int:
    """The attack: the rows of ``alarm_id`` not shown, counted as the distance from its first
    id to the next alarm's first id, less the rows shown (exact with sequential ids)."""
    first = ids(items, alarm_id)[0]
    following = ids(items, next_alarm_id)[0]
    return following - first - len(ids(items, alarm_id))


def own_rows(database_url: str, table: type[Row]) -> dict[str, list[dict[str, Any]]]:
    """The table's rows with their own ids, oldest first: all, and those shown outside HQ."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows: Sequence[Row] = session.exec(select(table).order_by(col(table.id))).all()
    finally:
        engine.dispose()
    every = [{"id": row.id, "alarm_id": row.alarm_pk, "hq_only": row.hq_only} for row in rows]
    return {"all": every, "shown": [row for row in every if not row["hq_only"]]}


def quietly(hq: httpx.Client, receiver: HTTPReceiver, wristband: Wristband, code: str) -> None:
    """Raise, cancel with ``code``, then HQ acknowledges through its link and resolves; each
    step's messages settled before the next."""
    wristband.raise_alarm(hq)
    settle(hq, wristband.alarm_id)
    wristband.cancel(code)
    settle(hq, wristband.alarm_id)
    httpx.post(hq_link(receiver, wristband.alarm_id))
    hq.post(f"/v1/alarms/{wristband.alarm_id}/resolve", json={"note": "all clear"})
    settle(hq, wristband.alarm_id)


def test_outside_hq_event_and_delivery_ids_leave_no_gap_where_a_duress_code_hid_rows(
    api: ApiHub, http_receiver: HTTPReceiver
) -> None:
    add_hq_desk(api, http_receiver)
    real, duress, then = (Wristband(api, http_receiver, f"wb-ids-{n}") for n in range(3))
    with (
        api.client(ApiRole.HQ) as hq,
        api.client(ApiRole.READ_ONLY) as dashboard,
        api.client(ApiRole.ADMIN) as operator,
        open_stream(dashboard) as live,
    ):
        started = next(live).id  # the opening block: the stream is listening, from here
        hook = {"url": f"{http_receiver.base_url}/hook", "events": ["alarm.*"]}
        assert operator.post("/v1/webhooks", json=hook).status_code == 201
        quietly(hq, http_receiver, real, CANCEL_CODE)
        quietly(hq, http_receiver, duress, DURESS_CODE)
        # Quiet now: a stream opened from "now" starts after the last event it may see.
        shown_so_far = walk(dashboard, "/v1/alarm-events", 200)
        with open_stream(dashboard) as fresh:
            opening = next(fresh)
        assert opening.id == str(shown_so_far[-1]["id"])
        then.raise_alarm(hq)  # the next thing that happens on the hub
        settle(hq, then.alarm_id)

        events = walk(dashboard, "/v1/alarm-events", 1)  # oldest first, a page per event
        deliveries = walk(dashboard, "/v1/deliveries", 1)[::-1]  # newest first: turned round
        hq_events = walk(hq, "/v1/alarm-events", 200)
        hq_deliveries = walk(hq, "/v1/deliveries", 200)[::-1]
        new = since(events, started)  # since the stream opened and the webhook was made
        streamed = stream_events(live, until=events[-1]["id"])
        where = [(e["alarm_id"], e["kind"]) for e in events]
        cancelled = where.index((real.alarm_id, "cancelled"))
        mark = str(events[cancelled]["id"])
        with open_stream(dashboard, headers={"Last-Event-ID": mark}) as resumed:
            resumed_events = stream_events(resumed, until=events[-1]["id"])
        with open_stream(dashboard, headers={"Last-Event-ID": opening.id}) as from_opening:
            after_opening = stream_events(from_opening, until=events[-1]["id"])
        after = dashboard.get("/v1/alarm-events", params={"after": mark, "limit": 200}).json()
        first_page = dashboard.get("/v1/alarm-events", params={"limit": 1}).json()

        def all_posted() -> list[dict[str, Any]] | None:
            posts = [json.loads(r.body) for r in list(http_receiver.requests) if r.path == "/hook"]
            got = {p["data"]["event"]["id"] for p in posts}
            return posts if set(ids(new)) <= got else None

        posts = wait_until(all_posted)
    for wristband in (real, duress, then):
        wristband.close()

    own = {"events": own_rows(api.database_url, AlarmEvent)}
    own["deliveries"] = own_rows(api.database_url, Delivery)
    engine = make_engine(api.database_url)
    permutation = outside_ids(engine)
    engine.dispose()
    seen = {"events": events, "deliveries": deliveries}
    # HQ sees every row, by its own id.
    assert ids(hq_events) == ids(own["events"]["all"])
    assert ids(hq_deliveries) == ids(own["deliveries"]["all"])
    # The scenario is the attack's: had the rows shown outside HQ kept their own ids, the
    # duress alarm's hidden rows would be counted exactly, and the real cancel's as none.
    for table in ("events", "deliveries"):
        hidden = {a.alarm_id: len(ids(own[table]["all"], a.alarm_id)) for a in (real, duress)}
        for alarm in (real, duress):
            hidden[alarm.alarm_id] -= len(ids(seen[table], alarm.alarm_id))
        assert hidden[real.alarm_id] == 0 and hidden[duress.alarm_id] > 0, table
        for alarm, following in ((real, duress), (duress, then)):
            own_count = hidden_rows_counted(own[table]["shown"], alarm.alarm_id, following.alarm_id)
            assert own_count == hidden[alarm.alarm_id]
            # Outside HQ the same count is wrong, for the real cancel and the duress code alike.
            guess = hidden_rows_counted(seen[table], alarm.alarm_id, following.alarm_id)
            assert guess != hidden[alarm.alarm_id], (table, alarm.device_id)
    # Outsiders' ids are the deployment's keyed permutation of the rows' own, in time order.
    for table, shown in (("events", permutation.events), ("deliveries", permutation.deliveries)):
        assert ids(seen[table]) == [shown.shown(i) for i in ids(own[table]["shown"])]
        assert ids(seen[table]) != ids(own[table]["shown"])

    # Paging, ?after=, the stream and its resumes with those ids: nothing missed or repeated.
    assert len(set(ids(events))) == len(events) and len(set(ids(deliveries))) == len(deliveries)
    assert ids(streamed) == ids(new)
    assert ids(resumed_events) == ids(events)[cancelled + 1 :]
    assert ids(after["items"]) == ids(events)[cancelled + 1 :]
    assert ids(after_opening) == ids(events)[len(shown_so_far) :]
    assert ids(after_opening, then.alarm_id) == ids(after_opening)  # the next alarm's, all
    cursor = base64.urlsafe_b64decode(first_page["next_cursor"] + "==").decode()
    assert cursor == f"v1:{first_page['items'][0]['id']}"  # only what the page showed

    # The webhook: one delivery per event shown, named by the id the read-only role sees.
    assert {p["id"] for p in posts} == {f"alarm_event.{i}" for i in ids(new)}
    assert all(p["id"] == f"alarm_event.{p['data']['event']['id']}" for p in posts)


def test_an_id_outside_hq_was_not_given_is_refused_not_resumed_from(api: ApiHub) -> None:
    """A made-up id, or one from before ids were permuted (a row's own id), would resume from
    wherever it happens to point: lost or repeated events without a word. An event for HQ only
    is refused alike: the answer tells nothing."""
    engine = make_engine(api.database_url)
    alarm_id = alarm_row(engine, "wb-ids-refused")
    (shown_row,) = add_events(engine, alarm_id, 1)
    with Session(engine) as session:
        hidden = AlarmEvent(alarm_pk=alarm_id, kind="duress", hq_only=True)
        session.add(hidden)
        session.commit()
        assert hidden.id is not None
    permutation = outside_ids(engine).events
    engine.dispose()
    given = permutation.shown(shown_row)
    with api.client(ApiRole.READ_ONLY) as dashboard:
        for wrong in (shown_row, permutation.shown(hidden.id)):
            listed = dashboard.get("/v1/alarm-events", params={"after": wrong})
            assert listed.status_code == 422, listed.text
            assert "not the id of an event you were given" in listed.json()["detail"]
            streamed = dashboard.get(
                "/v1/alarm-events/stream", headers={"Last-Event-ID": str(wrong)}
            )
            assert streamed.status_code == 400, streamed.text
            assert streamed.json()["code"] == "bad_last_event_id"
        assert dashboard.get("/v1/alarm-events", params={"after": given}).status_code == 200
        with open_stream(dashboard, headers={"Last-Event-ID": str(given)}) as resumed:
            assert next(resumed).id == str(given)
