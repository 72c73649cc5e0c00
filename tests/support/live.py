"""Helpers for the live-update tests: a server-sent-events reader over an httpx streaming
response, a real alarm raised over MQTT, and timeline rows written straight to a database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.db import make_engine
from hub.models import Alarm, AlarmEvent, Defender, Device
from tests.support.api import ApiHub
from tests.support.device import RawDevice, make_alarm
from tests.support.population import populate_on_broker
from tests.support.receivers import wait_until


@dataclass
class ServerSentEvent:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def is_event(self) -> bool:
        return bool(self.data)


def server_sent_events(response: httpx.Response) -> Iterator[ServerSentEvent]:
    """Parse the stream as the HTML standard says (``field: value`` lines, blank line ends one)."""
    current = ServerSentEvent()
    for line in response.iter_lines():
        if line == "":
            yield current
            current = ServerSentEvent()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            current.comments.append(value)
        elif name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            current.data.append(value)
        elif name == "retry":
            current.retry = int(value)


@contextlib.contextmanager
def open_stream(client: httpx.Client, **kwargs: Any) -> Iterator[Iterator[ServerSentEvent]]:
    with client.stream("GET", "/v1/alarm-events/stream", **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield server_sent_events(response)


def raise_alarm(api: ApiHub, device_id: str, contacts: dict[str, str] | None = None) -> int:
    """Register a defender and a wristband, publish one alarm over MQTT; the alarm's row id."""
    engine = make_engine(api.database_url)
    try:
        people = populate_on_broker(engine, api.broker, contacts or {}, device_id=device_id)
        device = RawDevice(
            api.broker.host, api.broker.port, device_id, people.device_password, people.device_key
        )
        try:
            assert device.publish("alarm", make_alarm(f"{device_id}-1").to_payload()) == "Success"
        finally:
            device.close()

        def stored() -> int | None:
            with Session(engine) as session:
                alarm = session.exec(select(Alarm).where(Alarm.device_id == device_id)).first()
                return alarm.id if alarm is not None else None

        found: int = wait_until(stored)
        return found
    finally:
        engine.dispose()


def alarm_row(engine: Engine, device_id: str = "wb-x") -> int:
    """A defender, a device and an alarm, written directly (for tests of readers of the table)."""
    with Session(engine) as session:
        defender = Defender(name="D")
        session.add(defender)
        session.flush()
        assert defender.id is not None
        session.add(Device(id=device_id, defender_id=defender.id))
        session.flush()
        alarm = Alarm(
            device_id=device_id,
            defender_id=defender.id,
            alarm_id="a1",
            kind="panic",
            device_ts=datetime.now(UTC),
            seq=1,
        )
        session.add(alarm)
        session.commit()
        assert alarm.id is not None
        return alarm.id


def add_events(engine: Engine, alarm_id: int, count: int, kind: str = "note") -> list[int]:
    """``count`` timeline rows of one alarm, committed together; their ids."""
    with Session(engine) as session:
        rows = [AlarmEvent(alarm_pk=alarm_id, kind=kind, detail=str(i)) for i in range(count)]
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows if row.id is not None]
