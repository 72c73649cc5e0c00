"""Turn one MQTT message into stored facts, or into a kept-and-reported rejection.

``handle()`` returns only after the database commit; its return value becomes the PUBACK
reason code, so the broker discards a message only when the hub has it.

Only a database outage withholds the PUBACK: ``handle()`` raises ``StorageUnavailable`` and the
broker keeps the message for redelivery. Anything else that goes wrong with one message — a
value the database cannot hold, a text that fails to render, a bug not known yet — ends with
that message kept as refused ("internal error: ..."), reported to HQ and acknowledged. A message
that failed on every delivery would otherwise stay in the broker's in-flight window (100
messages), and a hundred of them stop every device's alarms.

Telling the two apart: an error that is not about the message's values (a lost connection, a
refused login, a full disk) is an outage only if the database then fails a ping, or fails to
take the refusal too; when it answers, the message is tried once more (the failure may have
been a dropped connection), then refused.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from devicekit import protocol
from devicekit.topics import parse_topic
from hub import owntracks, responders
from hub.admission import Admission, Verdict, claimed_by
from hub.authenticity import ALARM_CHANNELS, Suspicious, open_payload
from hub.database import AsyncStore
from hub.store import AlarmOutcome, Handled, UnknownAlarm, UnknownDevice

log = logging.getLogger(__name__)

PUBACK_SUCCESS = 0
#: Database errors caused by the values of the message being stored (PostgreSQL's SQLSTATE
#: classes 22 and 23: out of range, invalid text, a constraint), never by an outage.
VALUE_ERRORS = (DataError, IntegrityError)

T = TypeVar("T")


class StorageUnavailable(RuntimeError):
    """The database could not store a message; it was not acknowledged to the broker."""


class Malformed(ValueError):
    """A device message that is not valid protocol (JSON, schema, type): refused with a reason."""


@dataclass(frozen=True)
class Rejection:
    rejected_id: int
    reason: str


@dataclass
class IngestCounts:
    """Since the hub started, for ``/healthz``."""

    internal_errors: int = 0  #: messages refused because handling them failed
    stale_telemetry: int = 0  #: heartbeats and locations below the anti-replay window, ignored


def describe_validation_error(exc: ValidationError) -> str:
    """A reason HQ can read, naming fields but never their values (they may be coordinates)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "payload"
        parts.append(f"{location}: {error['msg']}")
    more = len(exc.errors()) - len(parts)
    return "schema error: " + "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


#: Where the project's own code lives: the parent of the ``hub`` package.
_OWN_CODE = str(Path(__file__).resolve().parent.parent)


def describe_origin(exc: BaseException) -> str:
    """Where ``exc`` was raised in the project's code, and in a library below it
    (``hub/store.py:170 in record_alarm, psycopg/cursor.py:117``): enough for a developer, and
    no value, unlike the exception's text, which may quote a position."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [frame for frame in frames if _is_own(frame.filename)]
    places = [f"{_short(own[-1].filename)}:{own[-1].lineno} in {own[-1].name}"] if own else []
    if frames and (not own or frames[-1] is not own[-1]):
        places.append(f"{_short(frames[-1].filename)}:{frames[-1].lineno}")
    return ", ".join(places) or "an unknown place"


def _is_own(filename: str) -> bool:
    """Under the project's directory, and not in a virtual environment kept inside it."""
    return filename.startswith(_OWN_CODE) and "site-packages" not in filename[len(_OWN_CODE) :]


def _short(filename: str) -> str:
    path = Path(filename)
    return f"{path.parent.name}/{path.name}"


def parse_message(
    channel: str, body: bytes
) -> protocol.Alarm | protocol.Cancel | protocol.Location | protocol.Heartbeat | protocol.Status:
    """The protocol message in ``body``; raise Malformed with a reason that quotes no value."""
    try:
        return protocol.parse_device_message(channel, body)
    except ValidationError as exc:
        raise Malformed(describe_validation_error(exc)) from None
    except ValueError as exc:
        raise Malformed(str(exc)) from None


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
        # After the commit: whatever they do, the message is stored and gets its PUBACK.
        self.on_alarm = _after_commit(on_alarm, "after storing an alarm")
        self.on_rejected = _after_commit(on_rejected, "after keeping a refused message")
        self.on_storage_failure = on_storage_failure
        self.counts = IngestCounts()
        self._device_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def handle(self, topic: str, payload: bytes) -> int:
        """Store the message (or keep it as refused); raise only when the database is down."""
        try:
            return await self._handle(topic, payload)
        except StorageUnavailable:
            raise
        except Exception as exc:
            return await self._recover(topic, payload, exc)

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
        # One message of a device at a time: each reads and moves the device's replay window.
        async with self._device_locks.setdefault(device_id, asyncio.Lock()):
            return await self._handle_device(topic, device_id, channel, payload)

    async def _handle_device(self, topic: str, device_id: str, channel: str, payload: bytes) -> int:
        try:
            # One trip to the database thread: key, checks, parsing and storing together.
            outcome = await self.db.run(self._admit, topic, device_id, channel, payload)
        except Suspicious as exc:
            return await self._reject(topic, device_id, channel, str(exc), payload, True)
        except (Malformed, UnknownDevice, UnknownAlarm) as exc:
            return await self._reject(topic, device_id, channel, str(exc), payload)
        if isinstance(outcome, AlarmOutcome):
            log.info(
                "alarm %s from device %s: %s",
                f"A{outcome.alarm_pk}",
                device_id,
                "stored" if outcome.created else "copy of a stored alarm",
            )
            await self.on_alarm(outcome)
        elif outcome is Handled.STALE:
            self.counts.stale_telemetry += 1
            log.debug("%s of device %s is below its replay window: ignored", channel, device_id)
        return PUBACK_SUCCESS

    def _admit(
        self, topic: str, device_id: str, channel: str, payload: bytes
    ) -> AlarmOutcome | Handled:
        """On the database thread: check the signature, parse, store. Raises Suspicious,
        Malformed, UnknownDevice or UnknownAlarm to have it refused."""
        store = self.db.store
        device = store.device_key(device_id)
        if device is None:
            raise UnknownDevice(f"device {device_id!r} is not registered")
        message = parse_message(channel, open_payload(device, topic, payload))
        if isinstance(message, protocol.Alarm):
            return replace(store.record_alarm(device_id, message), device_key=device.key)
        return store.record_device_message(device_id, message)

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
        keep_whole: bool = False,
    ) -> int:
        size = len(payload)
        verdict = self.admission.refusal(
            topic, device_id, channel, reason, size, suspicious, keep_whole
        )
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

    # -- when handling one message fails -------------------------------------------------------

    async def _recover(self, topic: str, payload: bytes, exc: Exception) -> int:
        """``exc`` escaped while handling the message: a database outage (raise, no PUBACK),
        or something about this message (keep it as refused and acknowledge it)."""
        if isinstance(exc, SQLAlchemyError) and not isinstance(exc, VALUE_ERRORS):
            if not await self._database_answers():
                raise self._outage(topic, exc)
            try:  # the database answers: the failure may have been a dropped connection
                return await self._handle(topic, payload)
            except StorageUnavailable:
                raise
            except Exception as again:
                exc = again
        return await self._refuse_internal_error(topic, payload, exc)

    async def _refuse_internal_error(self, topic: str, payload: bytes, exc: Exception) -> int:
        self.counts.internal_errors += 1
        kind, origin = type(exc).__name__, describe_origin(exc)
        log.error(
            "internal error (%s at %s) while handling a message on %s: kept as refused and "
            "acknowledged, so that it cannot block the messages after it",
            kind,
            origin,
            topic,
        )
        reason = (
            f"internal error: {kind} while handling this message (at {origin}); the hub kept "
            "it for HQ: report it to the hub's developers"
        )
        device_id, channel = claimed_by(topic)
        # An alarm or cancel the hub could not handle may be real: HQ must be able to read it,
        # however many came (the reports are still summed up per account).
        keep_whole = channel in ALARM_CHANNELS
        try:
            return await self._reject(topic, device_id, channel, reason, payload, False, keep_whole)
        except Exception as failed:  # the database cannot even take the refusal: an outage
            raise self._outage(topic, failed) from None

    async def _database_answers(self) -> bool:
        try:
            return await self.db.run(self.db.store.database_answers)
        except Exception:
            return False

    def _outage(self, topic: str, exc: BaseException) -> StorageUnavailable:
        # The exception text may quote SQL parameters (positions): log only its type.
        log.error(
            "database error (%s) while storing a message on %s: not acknowledged; "
            "the broker keeps it and the hub will ask for it again",
            type(exc).__name__,
            topic,
        )
        self.on_storage_failure()
        return StorageUnavailable(type(exc).__name__)


def _after_commit(
    hook: Callable[[T], Awaitable[None]], when: str
) -> Callable[[T], Awaitable[None]]:
    """``hook`` run after a commit, its failure logged: it can no longer change the outcome."""

    async def run(value: T) -> None:
        try:
            await hook(value)
        except Exception as exc:
            log.error(
                "%s failed %s (at %s); the message stays stored and acknowledged",
                type(exc).__name__,
                when,
                describe_origin(exc),
            )

    return run
