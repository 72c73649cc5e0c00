"""Who and what the hub knows: defenders, their wristbands and contacts, responders, policies.

Arguments left as ``None`` are not sent: the hub applies its defaults on create and leaves the
field unchanged on update.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sdk._async_transport import AsyncResource
from sdk._base import given, path, payload, query
from sdk.models import (
    Contact,
    ContactIn,
    ContactUpdate,
    Defender,
    DefenderCodes,
    DefenderIn,
    DefenderUpdate,
    Device,
    DeviceCredentials,
    DeviceIn,
    DeviceResumed,
    Page,
    Policy,
    PolicyIn,
    RecipientRole,
    Responder,
    ResponderCreated,
    ResponderIn,
    ResponderUpdate,
)


class AsyncDefenders(AsyncResource):
    """``client.defenders``: the people who wear wristbands."""

    async def create(
        self,
        *,
        name: str,
        language: str | None = None,
        timezone: str | None = None,
        allow_public_broadcast: bool | None = None,
        policy: str | None = None,
    ) -> Defender:
        """Register a defender (defaults: English, UTC, no public broadcast, default policy)."""
        fields = given(
            language=language,
            timezone=timezone,
            allow_public_broadcast=allow_public_broadcast,
            policy=policy,
        )
        sent = payload(DefenderIn(name=name, **fields))
        return await self._api.fetch("POST", "/defenders", Defender, json=sent)

    async def get(self, defender_id: int) -> Defender:
        return await self._api.fetch("GET", path("defenders", defender_id), Defender)

    async def update(
        self,
        defender_id: int,
        *,
        name: str | None = None,
        language: str | None = None,
        timezone: str | None = None,
        allow_public_broadcast: bool | None = None,
        policy: str | None = None,
    ) -> Defender:
        fields = given(
            name=name,
            language=language,
            timezone=timezone,
            allow_public_broadcast=allow_public_broadcast,
            policy=policy,
        )
        sent = payload(DefenderUpdate(**fields))
        return await self._api.fetch("PATCH", path("defenders", defender_id), Defender, json=sent)

    async def set_codes(self, defender_id: int, *, cancel_code: str, duress_code: str) -> None:
        """Set the codes the defender types to cancel an alarm, or to "cancel" under duress."""
        sent = payload(DefenderCodes(cancel_code=cancel_code, duress_code=duress_code))
        await self._api.no_content("PUT", path("defenders", defender_id, "codes"), json=sent)

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Defender]:
        """One page, lowest id first."""
        params = query(limit=limit, cursor=cursor)
        return await self._api.fetch_page("/defenders", Defender, params)

    def iter(self, *, page_size: int | None = None) -> AsyncIterator[Defender]:
        return self._api.paginate("/defenders", Defender, query(limit=page_size))


class AsyncDevices(AsyncResource):
    """``client.devices``: wristbands; registering one creates its broker account."""

    async def create(
        self, *, device_id: str, defender_id: int, encrypt: bool = False
    ) -> DeviceCredentials:
        """Register a wristband; its broker password and signing key are in this answer only.

        ``encrypt``: the hub refuses its payloads unless they are encrypted with its key.
        """
        sent = payload(DeviceIn(id=device_id, defender_id=defender_id, encrypt=encrypt))
        return await self._api.fetch("POST", "/devices", DeviceCredentials, json=sent)

    async def get(self, device_id: str) -> Device:
        return await self._api.fetch("GET", path("devices", device_id), Device)

    async def suspend(self, device_id: str) -> Device:
        """Stop a lost or seized wristband at once: its broker account goes, its connection is
        closed, and whatever still arrives from it is refused and kept for HQ."""
        return await self._api.fetch("POST", path("devices", device_id, "suspend"), Device)

    async def revoke(self, device_id: str) -> Device:
        """:meth:`suspend`, and its client certificate (if any) is revoked for good."""
        return await self._api.fetch("POST", path("devices", device_id, "revoke"), Device)

    async def resume(self, device_id: str) -> DeviceResumed:
        """Bring a suspended wristband back: a new broker password (in this answer only), its
        certificate off hold. A revoked one cannot come back (409): re-provision it."""
        return await self._api.fetch("POST", path("devices", device_id, "resume"), DeviceResumed)

    async def list(
        self,
        *,
        defender_id: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Device]:
        params = query(defender_id=defender_id, limit=limit, cursor=cursor)
        return await self._api.fetch_page("/devices", Device, params)

    def iter(
        self, *, defender_id: int | None = None, page_size: int | None = None
    ) -> AsyncIterator[Device]:
        params = query(defender_id=defender_id, limit=page_size)
        return self._api.paginate("/devices", Device, params)


class AsyncContacts(AsyncResource):
    """``client.contacts``: who gets alarms. Channel URLs hold credentials: answers mask them."""

    async def create(
        self,
        *,
        name: str,
        channel_url: str,
        defender_id: int | None = None,
        role: RecipientRole | str | None = None,
        language: str | None = None,
        fallback_urls: builtins.list[str] | None = None,
        receives_tests: bool | None = None,
    ) -> Contact:
        """A defender's contact (role "trusted" by default) or, without ``defender_id``, an
        organisation-wide one (HQ, partners, press...)."""
        fields = given(
            defender_id=defender_id,
            role=role,
            language=language,
            fallback_urls=fallback_urls,
            receives_tests=receives_tests,
        )
        sent = payload(ContactIn(name=name, channel_url=channel_url, **fields))
        return await self._api.fetch("POST", "/contacts", Contact, json=sent)

    async def get(self, contact_id: int) -> Contact:
        return await self._api.fetch("GET", path("contacts", contact_id), Contact)

    async def update(
        self,
        contact_id: int,
        *,
        name: str | None = None,
        language: str | None = None,
        receives_tests: bool | None = None,
        active: bool | None = None,
    ) -> Contact:
        fields = given(name=name, language=language, receives_tests=receives_tests, active=active)
        sent = payload(ContactUpdate(**fields))
        return await self._api.fetch("PATCH", path("contacts", contact_id), Contact, json=sent)

    async def list(
        self,
        *,
        defender_id: int | None = None,
        role: RecipientRole | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Contact]:
        params = query(defender_id=defender_id, role=role, limit=limit, cursor=cursor)
        return await self._api.fetch_page("/contacts", Contact, params)

    def iter(
        self,
        *,
        defender_id: int | None = None,
        role: RecipientRole | str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Contact]:
        params = query(defender_id=defender_id, role=role, limit=page_size)
        return self._api.paginate("/contacts", Contact, params)


class AsyncResponders(AsyncResource):
    """``client.responders``: people near enough to come, found by their shared position."""

    async def create(
        self,
        *,
        name: str,
        channel_url: str,
        language: str | None = None,
        radius_m: float | None = None,
        fallback_urls: builtins.list[str] | None = None,
        receives_tests: bool | None = None,
        mqtt_user: str | None = None,
    ) -> ResponderCreated:
        """With ``mqtt_user``, also an OwnTracks broker account: its password is in this answer
        only."""
        fields = given(
            language=language,
            radius_m=radius_m,
            fallback_urls=fallback_urls,
            receives_tests=receives_tests,
            mqtt_user=mqtt_user,
        )
        sent = payload(ResponderIn(name=name, channel_url=channel_url, **fields))
        return await self._api.fetch("POST", "/responders", ResponderCreated, json=sent)

    async def get(self, responder_id: int) -> Responder:
        return await self._api.fetch("GET", path("responders", responder_id), Responder)

    async def update(
        self,
        responder_id: int,
        *,
        name: str | None = None,
        language: str | None = None,
        radius_m: float | None = None,
        available: bool | None = None,
        receives_tests: bool | None = None,
    ) -> Responder:
        fields = given(
            name=name,
            language=language,
            radius_m=radius_m,
            available=available,
            receives_tests=receives_tests,
        )
        sent = payload(ResponderUpdate(**fields))
        url = path("responders", responder_id)
        return await self._api.fetch("PATCH", url, Responder, json=sent)

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Responder]:
        params = query(limit=limit, cursor=cursor)
        return await self._api.fetch_page("/responders", Responder, params)

    def iter(self, *, page_size: int | None = None) -> AsyncIterator[Responder]:
        return self._api.paginate("/responders", Responder, query(limit=page_size))


class AsyncPolicies(AsyncResource):
    """``client.policies``: escalation policies (stages, delays, conditions), by name."""

    async def get(self, name: str) -> Policy:
        return await self._api.fetch("GET", path("policies", name), Policy)

    async def put(self, name: str, document: Mapping[str, Any]) -> Policy:
        """Create or replace a policy; the hub checks the document before storing it."""
        sent = payload(PolicyIn(document=dict(document)))
        return await self._api.fetch("PUT", path("policies", name), Policy, json=sent)

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Policy]:
        params = query(limit=limit, cursor=cursor)
        return await self._api.fetch_page("/policies", Policy, params)

    def iter(self, *, page_size: int | None = None) -> AsyncIterator[Policy]:
        return self._api.paginate("/policies", Policy, query(limit=page_size))
