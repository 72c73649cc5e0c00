"""A duress code must look like a real cancel to everyone outside HQ — here the API's read-only
role, its live stream and a partner's webhook — then and later, while HQ sees the truth.

A real hub with its API, a real broker, wristbands publishing over MQTT, a real HTTP receiver as
HQ's desk, the trusted contacts' channels and the partner's webhook. Two alarms are raised; one
is cancelled with the real code, the other with the duress code; HQ then acknowledges (through
its link) and resolves both, which only works on the duress alarm. Everything the outsiders get
about the two alarms must be the same once ids and times are taken out.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from hub.db import make_engine
from hub.retention import apply_retention
from sdk.models import AlarmState, ApiRole
from tests.support.api import ApiHub, walk
from tests.support.duress import (
    CANCEL_CODE,
    DURESS_CODE,
    Wristband,
    add_hq_desk,
    event_ids,
    hq_link,
    settle,
    stream_events,
)
from tests.support.live import add_events, alarm_row, open_stream
from tests.support.receivers import HTTPReceiver, wait_until

RETENTION = timedelta(days=30)
#: Fields that differ between any two alarms: ids and the wristband's name.
IDS = {"id", "ref", "alarm_id", "alarm_ref", "device_id", "defender_id", "device_alarm_id"}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)?$")


def anonymous(value: Any, alarm_id: int, device_id: str) -> Any:
    """``value`` (JSON) without ids and times: times become "<time>", ids go."""
    if isinstance(value, dict):
        return {
            key: anonymous(item, alarm_id, device_id)
            for key, item in sorted(value.items())
            if key not in IDS
        }
    if isinstance(value, list):
        return [anonymous(item, alarm_id, device_id) for item in value]
    if isinstance(value, str):
        if TIME.match(value):
            return "<time>"
        return value.replace(f"A{alarm_id}", "A?").replace(device_id, "wb-?")
    return value


def as_set(items: list[Any]) -> list[str]:
    """Items in a canonical order: messages to HQ and the contact go side by side."""
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def apply_retention_to(api: ApiHub, now: datetime) -> None:
    engine = make_engine(api.database_url)
    try:
        apply_retention(engine, now, RETENTION)
    finally:
        engine.dispose()


def webhook_posts(receiver: HTTPReceiver, alarm_id: int) -> list[dict[str, Any]]:
    posts = [json.loads(r.body) for r in list(receiver.requests) if r.path == "/hook"]
    return [p for p in posts if p["data"]["alarm"]["id"] == alarm_id]


def test_a_duress_alarm_reads_as_a_real_cancel_to_the_read_only_role_its_stream_and_webhooks(
    api: ApiHub, http_receiver: HTTPReceiver
) -> None:
    add_hq_desk(api, http_receiver)
    engine = make_engine(api.database_url)
    add_events(engine, alarm_row(engine, "wb-earlier"), 1)  # so a resume from 0 reads the table
    engine.dispose()
    real = Wristband(api, http_receiver, "wb-real")
    duress = Wristband(api, http_receiver, "wb-duress")
    both = (real, duress)
    with (
        api.client(ApiRole.HQ) as hq,
        api.client(ApiRole.READ_ONLY) as dashboard,
        api.client(ApiRole.ADMIN) as operator,
        open_stream(dashboard) as live,
    ):
        next(live)  # the opening block: the stream is listening
        for wristband in both:
            wristband.raise_alarm(hq)
        # The partner subscribes now: what it gets comes after the (apparent) cancel.
        seen_before = {e["id"] for e in walk(dashboard, "/v1/alarm-events", 200)}
        hook = {"url": f"{http_receiver.base_url}/hook", "events": ["alarm.*"]}
        assert operator.post("/v1/webhooks", json=hook).status_code == 201
        real.cancel(CANCEL_CODE)
        duress.cancel(DURESS_CODE)
        for wristband in both:  # HQ acts on both; only the duress alarm is still open
            settle(hq, wristband.alarm_id)
            httpx.post(hq_link(http_receiver, wristband.alarm_id))
            hq.post(f"/v1/alarms/{wristband.alarm_id}/resolve", json={"note": "all clear"})
        for wristband in both:
            settle(hq, wristband.alarm_id)
        truth = hq.get(f"/v1/alarms/{duress.alarm_id}").json()
        assert (truth["state"], truth["duress"]) == ("resolved", True)  # HQ sees the truth
        hq_timeline = hq.get(f"/v1/alarms/{duress.alarm_id}/events").json()
        assert {"duress", "acknowledged", "resolved"} <= {e["kind"] for e in hq_timeline}

        def outside(wristband: Wristband) -> dict[str, Any]:
            """Everything the read-only role can read about the wristband's alarm."""
            alarm_id = wristband.alarm_id
            seen: dict[str, Any] = {
                "alarm": dashboard.get(f"/v1/alarms/{alarm_id}").json(),
                "timeline": dashboard.get(f"/v1/alarms/{alarm_id}/events").json(),
                "deliveries": dashboard.get(f"/v1/alarms/{alarm_id}/deliveries").json(),
                "events_paged": walk(dashboard, "/v1/alarm-events", 1, alarm_id=alarm_id),
                "deliveries_paged": walk(dashboard, "/v1/deliveries", 1, alarm_id=alarm_id),
            }
            for state in AlarmState:  # a filter finds it exactly where it finds a real cancel
                listed = walk(dashboard, "/v1/alarms", 1, state=[state.value])
                seen[state.value] = [a["state"] for a in listed if a["id"] == alarm_id]
            plain = anonymous(seen, alarm_id, wristband.device_id)
            return {key: as_set(v) if isinstance(v, list) else v for key, v in plain.items()}

        assert outside(duress) == outside(real)
        assert outside(real)["alarm"]["state"] == "cancelled"
        visible = {w.alarm_id: event_ids(dashboard, w.alarm_id) for w in both}
        last = walk(dashboard, "/v1/alarm-events", 200)[-1]["id"]  # in time order
        streamed = stream_events(live, until=last)
        with open_stream(dashboard, headers={"Last-Event-ID": "0"}) as resumed:
            replayed = stream_events(resumed, until=last)  # read back from the database

        def all_posted() -> dict[int, list[dict[str, Any]]] | None:
            posted = {w.alarm_id: webhook_posts(http_receiver, w.alarm_id) for w in both}
            for alarm_id, posts in posted.items():
                expected = set(visible[alarm_id]) - seen_before
                if not expected <= {p["data"]["event"]["id"] for p in posts}:
                    return None
            return posted

        posted = wait_until(all_posted)
        # Later: retention erases the real one's position when it is as old as the period...
        erased_at = datetime.fromisoformat(truth["closed_at"]) + RETENTION
        apply_retention_to(api, erased_at)
        later = {w.alarm_id: dashboard.get(f"/v1/alarms/{w.alarm_id}").json() for w in both}
        kept = hq.get(f"/v1/alarms/{duress.alarm_id}").json()["position"]
    for wristband in both:
        wristband.close()
    # ... and the duress one's is gone for outsiders in the same run; HQ keeps it (closed later).
    assert later[real.alarm_id]["position"] is None and kept is not None
    assert anonymous(later[duress.alarm_id], duress.alarm_id, duress.device_id) == anonymous(
        later[real.alarm_id], real.alarm_id, real.device_id
    )

    def of(events: list[dict[str, Any]], wristband: Wristband) -> list[str]:
        mine = [e for e in events if e["alarm_id"] == wristband.alarm_id]
        return as_set(anonymous(mine, wristband.alarm_id, wristband.device_id))

    assert of(streamed, duress) == of(streamed, real)
    assert of(replayed, duress) == of(replayed, real) == of(streamed, real)
    hooked = {
        w.alarm_id: as_set(anonymous(posted[w.alarm_id], w.alarm_id, w.device_id)) for w in both
    }
    assert hooked[duress.alarm_id] == hooked[real.alarm_id]
    assert {p["type"] for p in posted[real.alarm_id]} == {"alarm.cancelled", "alarm.delivered"}


def test_filters_and_retention_read_a_duress_alarm_as_cancelled_on_every_database(
    database_url: str,
) -> None:
    """The SQL behind the views above, on SQLite and PostgreSQL."""
    from sqlmodel import Session, col, select

    from hub.disclosure import duress_times, outside_state, outside_view
    from hub.models import Alarm

    code_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    engine = make_engine(database_url)
    real, duress = alarm_row(engine, "wb-real"), alarm_row(engine, "wb-duress")
    with Session(engine) as session:
        for pk, closed_at in ((real, code_at), (duress, code_at + timedelta(hours=1))):
            alarm = session.get(Alarm, pk)
            assert alarm is not None
            alarm.state = "cancelled" if pk == real else "resolved"
            alarm.lat, alarm.lon, alarm.closed_at = 43.3, 45.7, closed_at
            alarm.duress, alarm.duress_at = pk == duress, code_at if pk == duress else None
            session.add(alarm)
        session.commit()

        def found(state: str, column: Any) -> set[int | None]:
            return set(session.exec(select(Alarm.id).where(column.in_([state]))))

        assert found("cancelled", outside_state()) == {real, duress}
        assert found("resolved", outside_state()) == set()
        assert found("resolved", col(Alarm.state)) == {duress}  # HQ's filter
        assert duress_times(session, [real, duress, None]) == {duress: code_at}

    apply_retention(engine, code_at + RETENTION + timedelta(minutes=30), RETENTION)

    with Session(engine) as session:
        erased, kept = session.get(Alarm, real), session.get(Alarm, duress)
        assert erased is not None and kept is not None
        assert erased.lat is None and kept.lat == 43.3  # HQ keeps it: closed after the cutoff
        assert outside_view(kept).lat is None and outside_view(kept).fix_ts is None
    engine.dispose()
