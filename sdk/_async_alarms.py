"""Alarms and what happened to them: timelines, HQ actions, deliveries, rejected messages.

Every alarm argument takes its id (``12``) or its reference (``"A12"``), as HQ staff say it.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from sdk._async_transport import AsyncResource
from sdk._base import QueryValue, alarm_key, path, payload, query
from sdk.models import (
    Alarm,
    AlarmAction,
    AlarmEvent,
    AlarmState,
    Delivery,
    EscalationResult,
    Page,
    RejectedMessage,
)

AlarmRef = int | str
States = AlarmState | str | Iterable[AlarmState | str]


def _alarm_filters(
    state: States | None,
    kind: str | None,
    defender_id: int | None,
    device_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, QueryValue]:
    states = [state] if isinstance(state, str) else state
    return query(
        state=states,
        kind=kind,
        defender_id=defender_id,
        device_id=device_id,
        since=since,
        until=until,
    )


class AsyncAlarms(AsyncResource):
    """``client.alarms``: newest first; HQ's actions return the alarm as it is afterwards."""

    async def get(self, alarm: AlarmRef) -> Alarm:
        return await self._api.fetch("GET", path("alarms", alarm_key(alarm)), Alarm)

    async def list(
        self,
        *,
        state: States | None = None,
        kind: str | None = None,
        defender_id: int | None = None,
        device_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Alarm]:
        """One page, newest first; ``state`` may be one state or several."""
        params = _alarm_filters(state, kind, defender_id, device_id, since, until)
        params.update(query(limit=limit, cursor=cursor))
        return await self._api.fetch_page("/alarms", Alarm, params)

    def iter(
        self,
        *,
        state: States | None = None,
        kind: str | None = None,
        defender_id: int | None = None,
        device_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Alarm]:
        params = _alarm_filters(state, kind, defender_id, device_id, since, until)
        params.update(query(limit=page_size))
        return self._api.paginate("/alarms", Alarm, params)

    async def events(self, alarm: AlarmRef) -> builtins.list[AlarmEvent]:
        """The alarm's whole timeline, oldest first."""
        return await self._api.fetch_list(path("alarms", alarm_key(alarm), "events"), AlarmEvent)

    async def deliveries(self, alarm: AlarmRef) -> builtins.list[Delivery]:
        """Every message sent (or being sent) about the alarm, to whom, on which channel."""
        url = path("alarms", alarm_key(alarm), "deliveries")
        return await self._api.fetch_list(url, Delivery)

    async def acknowledge(self, alarm: AlarmRef, *, note: str = "") -> Alarm:
        """HQ has seen the alarm: stops escalation to the next stage."""
        return await self._act(alarm, "acknowledge", note)

    async def verify(self, alarm: AlarmRef, *, note: str = "") -> Alarm:
        """HQ confirmed the danger: allows the wider (public) stages the policy permits."""
        return await self._act(alarm, "verify", note)

    async def resolve(self, alarm: AlarmRef, *, note: str = "") -> Alarm:
        return await self._act(alarm, "resolve", note)

    async def false_alarm(self, alarm: AlarmRef, *, note: str = "") -> Alarm:
        return await self._act(alarm, "false-alarm", note)

    async def escalate(self, alarm: AlarmRef, *, note: str = "") -> EscalationResult:
        """Run the next escalation stage now; ``queued`` says how many messages it sent."""
        url = path("alarms", alarm_key(alarm), "escalate")
        sent = payload(AlarmAction(note=note))
        return await self._api.fetch("POST", url, EscalationResult, json=sent)

    async def _act(self, alarm: AlarmRef, action: str, note: str) -> Alarm:
        url = path("alarms", alarm_key(alarm), action)
        return await self._api.fetch("POST", url, Alarm, json=payload(AlarmAction(note=note)))


class AsyncAlarmEvents(AsyncResource):
    """``client.alarm_events``: every alarm's timeline entries, lowest id first.

    For live events use ``client.stream_alarm_events()``.
    """

    async def list(
        self,
        *,
        alarm_id: AlarmRef | None = None,
        after: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[AlarmEvent]:
        """One page; ``after`` skips the events up to that id (e.g. the last one you saw)."""
        alarm = alarm_key(alarm_id) if alarm_id is not None else None
        params = query(alarm_id=alarm, after=after, limit=limit, cursor=cursor)
        return await self._api.fetch_page("/alarm-events", AlarmEvent, params)

    def iter(
        self,
        *,
        alarm_id: AlarmRef | None = None,
        after: int | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[AlarmEvent]:
        alarm = alarm_key(alarm_id) if alarm_id is not None else None
        params = query(alarm_id=alarm, after=after, limit=page_size)
        return self._api.paginate("/alarm-events", AlarmEvent, params)


class AsyncDeliveries(AsyncResource):
    """``client.deliveries``: the outbox: one message to one recipient on one channel."""

    async def list(
        self,
        *,
        alarm_id: AlarmRef | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Delivery]:
        alarm = alarm_key(alarm_id) if alarm_id is not None else None
        params = query(alarm_id=alarm, status=status, kind=kind, limit=limit, cursor=cursor)
        return await self._api.fetch_page("/deliveries", Delivery, params)

    def iter(
        self,
        *,
        alarm_id: AlarmRef | None = None,
        status: str | None = None,
        kind: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Delivery]:
        alarm = alarm_key(alarm_id) if alarm_id is not None else None
        params = query(alarm_id=alarm, status=status, kind=kind, limit=page_size)
        return self._api.paginate("/deliveries", Delivery, params)


class AsyncRejectedMessages(AsyncResource):
    """``client.rejected_messages``: what the hub could not accept, kept for HQ to review."""

    async def list(
        self,
        *,
        reviewed: bool | None = None,
        suspicious: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[RejectedMessage]:
        """One page, newest first; ``reviewed=False``: only those HQ has not looked at yet;
        ``suspicious=True``: only those that may be forged or replayed."""
        params = query(reviewed=reviewed, suspicious=suspicious, limit=limit, cursor=cursor)
        return await self._api.fetch_page("/rejected-messages", RejectedMessage, params)

    def iter(
        self,
        *,
        reviewed: bool | None = None,
        suspicious: bool | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[RejectedMessage]:
        params = query(reviewed=reviewed, suspicious=suspicious, limit=page_size)
        return self._api.paginate("/rejected-messages", RejectedMessage, params)

    async def review(self, message_id: int) -> RejectedMessage:
        """Mark the message as looked at by HQ (again: no change)."""
        url = path("rejected-messages", message_id, "review")
        return await self._api.fetch("POST", url, RejectedMessage)
