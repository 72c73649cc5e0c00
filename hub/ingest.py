"""Turn one MQTT message into stored facts, or into a kept-and-reported rejection.

``handle()`` returns only after the database commit; its return value becomes the PUBACK
reason code, so the broker discards a message only when the hub has it. When the database is
unavailable it raises: no PUBACK is sent and the broker keeps the message for redelivery.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from devicekit import protocol
from devicekit.topics import parse_topic
from hub import owntracks, responders
from hub.admission import Admission, Verdict, claimed_by
from hub.authenticity import Suspicious, open_payload
from hub.database import AsyncStore
from hub.store import AlarmOutcome, UnknownAlarm, UnknownDevice

log = logging.getLogger(__name__)

PUBACK_SUCCESS = 0


class StorageUnavailable(RuntimeError):
    """The database could not store a message; it was not acknowledged to the broker."""


@dataclass(frozen=True)
class Rejection:
    rejected_id: int
    reason: str


def describe_validation_error(exc: ValidationError) -> str:
    """A reason HQ can read, naming fields but never their values (they may be coordinates)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "payload"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - len(parts)
    return "schema error: " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class Ingest:
    """The hub's message handler. ``on_alarm`` runs after an alarm (or a copy of one) is stored."""

    def __init__(
        self,
        db: AsyncStore,
        on_alarm: Callable[[AlarmOutcome], Awaitable[None]],
        on_rejected: Callable[[Rejection], Awaitable[None]],
        on_storage_failure: Callable[[], None] = lambda: None,
        admission: Admission | None = None,
    ) -> None:
        self.db = db
        #: Per-account budgets and refusal summaries (hub/admission.py).
        self.admission = admission or Admission()
        self.on_alarm = on_alarm
        self.on_rejected = on_rejected
        self.on_storage_failure = on_storage_failure
        self._device_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def handle(self, topic: str, payload: bytes) -> int:
        """Store the message (or keep it as refused); raise when the database cannot."""
        try:
            return await self._handle(topic, payload)
        except SQLAlchemyError as exc:
            # The exception text may quote SQL parameters (positions): log only its type.
            log.error(
                "database error (%s) while storing a message on %s: not acknowledged; "
                "the broker keeps it and the hub will ask for it again",
                type(exc).__name__,
                topic,
            )
            self.on_storage_failure()
            raise StorageUnavailable(type(exc).__name__) from None

    async def _handle(self, topic: str, payload: bytes) -> int:
        refused = self.admission.enter(topic)  # its database lane; a replay, over its rate?
        if refused is not None:
            return await self._reject(topic, *claimed_by(topic), refused, payload)
        if topic.startswith("owntracks/"):
            return await self._handle_owntracks(topic, payload)
        try:
            device_id, channel = parse_topic(topic)
        except ValueError as exc:
            return await self._reject(topic, None, None, str(exc), payload)
        if channel not in protocol.DEVICE_CHANNELS:
            reason = f"channel {channel!r} is hub-to-device only"
            return await self._reject(topic, device_id, channel, reason, payload)
        if len(payload) > protocol.MAX_PAYLOAD_BYTES:
            reason = (
                f"payload of {len(payload)} bytes exceeds the {protocol.MAX_PAYLOAD_BYTES} limit"
            )
            return await self._reject(topic, device_id, channel, reason, payload)
        # One message of a device at a time, in arrival order: the sequence check needs order.
        async with self._device_locks.setdefault(device_id, asyncio.Lock()):
            return await self._handle_device(topic, device_id, channel, payload)

    async def _handle_device(self, topic: str, device_id: str, channel: str, payload: bytes) -> int:
        try:
            # One trip to the database thread: key, checks, parsing and storing together.
            outcome = await self.db.run(self._admit, topic, device_id, channel, payload)
        except Suspicious as exc:
            return await self._reject(topic, device_id, channel, str(exc), payload, True)
        except ValidationError as exc:
            reason = describe_validation_error(exc)
            return await self._reject(topic, device_id, channel, reason, payload)
        except (ValueError, UnknownDevice, UnknownAlarm) as exc:
            return await self._reject(topic, device_id, channel, str(exc), payload)
        if outcome is not None:
            log.info(
                "alarm %s from device %s: %s",
                f"A{outcome.alarm_pk}",
                device_id,
                "stored" if outcome.created else "copy of a stored alarm",
            )
            await self.on_alarm(outcome)
        return PUBACK_SUCCESS

    def _admit(
        self, topic: str, device_id: str, channel: str, payload: bytes
    ) -> AlarmOutcome | None:
        """On the database thread: check the signature, parse, store. Raises Suspicious,
        ValueError (a malformed message), UnknownDevice or UnknownAlarm to have it refused."""
        store = self.db.store
        device = store.device_key(device_id)
        if device is None:
            raise UnknownDevice(f"device {device_id!r} is not registered")
        message = protocol.parse_device_message(channel, open_payload(device, topic, payload))
        if isinstance(message, protocol.Alarm):
            return replace(store.record_alarm(device_id, message), device_key=device.key)
        store.record_device_message(device_id, message)
        return None

    async def _handle_owntracks(self, topic: str, payload: bytes) -> int:
        """A responder's phone (the OwnTracks app) reporting where it is."""
        try:
            location = owntracks.parse_owntracks(topic, payload)
        except ValueError as exc:
            return await self._reject(topic, None, "owntracks", str(exc), payload)
        if location is None:  # the app's last will, or another non-location message
            return PUBACK_SUCCESS
        stored = await self.db.run(
            responders.record_position, self.db.store.engine, location.user, location
        )
        if stored is None:
            reason = f"no responder has the OwnTracks username {location.user!r}"
            return await self._reject(topic, None, "owntracks", reason, payload)
        return PUBACK_SUCCESS

    async def _reject(
        self,
        topic: str,
        device_id: str | None,
        channel: str | None,
        reason: str,
        payload: bytes,
        suspicious: bool = False,
    ) -> int:
        size = len(payload)
        verdict = self.admission.refusal(topic, device_id, channel, reason, size, suspicious)
        if verdict is Verdict.COUNT:  # a flood: counted for its account's summary
            return PUBACK_SUCCESS
        rejected_id = await self.db.run(
            self.db.store.record_rejected,
            topic,
            device_id,
            channel,
            reason,
            payload,
            suspicious,
            report=verdict is Verdict.REPORT,
        )
        self.admission.kept(topic, rejected_id)
        log.warning(
            "refused %smessage R%s (device %s): %s",
            "SUSPICIOUS " if suspicious else "",
            rejected_id,
            device_id or "?",
            reason,
        )
        await self.on_rejected(Rejection(rejected_id, reason))
        return PUBACK_SUCCESS

    async def handle_retained(self, topic: str, payload: bytes) -> int:
        """A message the broker flagged retained: a stored copy replayed to a subscription
        (live messages reach the hub without the flag). Handled as usual on ``status``; on any
        other topic refused, since its original was handled when it was published."""
        self.admission.mark_replayed()
        return await self.handle(topic, payload)
