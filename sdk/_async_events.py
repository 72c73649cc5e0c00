"""Defenders' Days: events with their programme, registrations, announcements and training.

During an event's training, participants wear training wristbands; whatever such a wristband
sends is a ``test`` alarm that goes only to its participant (the registration's channel), never
to HQ, contacts, responders or the public. Handing out wristbands (their passwords and keys),
ending training, training alarms and registering a defender by ``defender_id`` need an
operations role (``hq``, ``admin``); an ``integration`` token sees only its own registrations.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime
from typing import Any

from sdk._async_transport import AsyncResource
from sdk._base import given, path, payload, query
from sdk.models import (
    Alarm,
    Announcement,
    AnnouncementIn,
    Event,
    EventIn,
    EventSession,
    NeedsIn,
    Page,
    ParticipantKind,
    Registration,
    RegistrationIn,
    SessionIn,
    SessionKind,
    Training,
    TrainingAlarmIn,
)


class AsyncEvents(AsyncResource):
    """``client.events``: Defenders' Days and everything that happens at one."""

    async def create(
        self,
        *,
        name: str,
        starts_on: date,
        ends_on: date,
        location: str | None = None,
        description: str | None = None,
    ) -> Event:
        fields = given(location=location, description=description)
        sent = payload(EventIn(name=name, starts_on=starts_on, ends_on=ends_on, **fields))
        return await self._api.fetch("POST", "/events", Event, json=sent)

    async def get(self, event_id: int) -> Event:
        return await self._api.fetch("GET", path("events", event_id), Event)

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Event]:
        return await self._api.fetch_page("/events", Event, query(limit=limit, cursor=cursor))

    def iter(self, *, page_size: int | None = None) -> AsyncIterator[Event]:
        return self._api.paginate("/events", Event, query(limit=page_size))

    # -- programme -----------------------------------------------------------------------------

    async def sessions(self, event_id: int) -> builtins.list[EventSession]:
        """The programme, in order."""
        return await self._api.fetch_list(path("events", event_id, "sessions"), EventSession)

    async def add_session(
        self,
        event_id: int,
        *,
        title: str,
        starts_at: datetime,
        ends_at: datetime,
        kind: SessionKind | str | None = None,
        room: str | None = None,
        description: str | None = None,
    ) -> EventSession:
        fields = given(kind=kind, room=room, description=description)
        model = SessionIn(title=title, starts_at=starts_at, ends_at=ends_at, **fields)
        url = path("events", event_id, "sessions")
        return await self._api.fetch("POST", url, EventSession, json=payload(model))

    # -- registrations -------------------------------------------------------------------------

    async def register(
        self,
        event_id: int,
        *,
        kind: ParticipantKind | str,
        defender_id: int | None = None,
        name: str | None = None,
        channel_url: str | None = None,
        language: str | None = None,
        needs: NeedsIn | Mapping[str, Any] | None = None,
    ) -> Registration:
        """Register a defender (``defender_id``) or a guest (``name``); announcements go to
        ``channel_url``. ``needs``: ``visa_letter``, ``travel_support``,
        ``security_considerations``."""
        fields = given(
            defender_id=defender_id,
            name=name,
            channel_url=channel_url,
            language=language,
            needs=needs,
        )
        sent = payload(RegistrationIn(kind=kind, **fields))
        url = path("events", event_id, "registrations")
        return await self._api.fetch("POST", url, Registration, json=sent)

    async def registration(self, event_id: int, registration_id: int) -> Registration:
        url = path("events", event_id, "registrations", registration_id)
        return await self._api.fetch("GET", url, Registration)

    async def cancel_registration(self, event_id: int, registration_id: int) -> Registration:
        """The registration stays, with status ``"cancelled"``."""
        url = path("events", event_id, "registrations", registration_id)
        return await self._api.fetch("DELETE", url, Registration)

    async def registrations(
        self, event_id: int, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Registration]:
        url = path("events", event_id, "registrations")
        return await self._api.fetch_page(url, Registration, query(limit=limit, cursor=cursor))

    def iter_registrations(
        self, event_id: int, *, page_size: int | None = None
    ) -> AsyncIterator[Registration]:
        url = path("events", event_id, "registrations")
        return self._api.paginate(url, Registration, query(limit=page_size))

    # -- announcements -------------------------------------------------------------------------

    async def announcements(self, event_id: int) -> builtins.list[Announcement]:
        return await self._api.fetch_list(path("events", event_id, "announcements"), Announcement)

    async def announce(
        self, event_id: int, *, title: str, body: str, short: str | None = None
    ) -> Announcement:
        """Send to every registration with a channel; ``short`` is the SMS text (default: the
        title). ``recipients`` in the answer says how many messages were queued."""
        sent = payload(AnnouncementIn(title=title, body=body, **given(short=short)))
        url = path("events", event_id, "announcements")
        return await self._api.fetch("POST", url, Announcement, json=sent)

    # -- training ------------------------------------------------------------------------------

    async def start_training(self, event_id: int) -> Training:
        """Hand out training wristbands: each kit's broker password is in this answer only."""
        return await self._api.fetch("POST", path("events", event_id, "training"), Training)

    async def training(self, event_id: int) -> Training:
        return await self._api.fetch("GET", path("events", event_id, "training"), Training)

    async def end_training(self, event_id: int) -> Training:
        return await self._api.fetch("DELETE", path("events", event_id, "training"), Training)

    async def training_alarm(self, event_id: int, *, registration_id: int) -> Alarm:
        """Raise a training alarm as the participant's wristband would (for drills)."""
        sent = payload(TrainingAlarmIn(registration_id=registration_id))
        url = path("events", event_id, "training", "alarms")
        return await self._api.fetch("POST", url, Alarm, json=sent)
