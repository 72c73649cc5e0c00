"""The ids those outside HQ see: timeline event ids and delivery ids, keyed and permuted.

Why. Timeline events (``AlarmEvent.id``) and deliveries (``Delivery.id``) are numbered by one
sequence per table, and the rows only HQ may see (``hub.disclosure``: the duress event, HQ's
alert, the stages run at once, everything HQ did afterwards) take numbers from it too. Someone
who sees every alarm from outside HQ — the read-only role, its live stream, a partner's webhook
— would see the numbers it was not shown as gaps: on a quiet hub, a gap right after a
"cancelled" event says that a duress code was entered. So outside HQ each of these ids is shown
through a keyed pseudo-random permutation (:class:`IdPermutation`): one number per row, for good
(a webhook receiver's de-duplication key, a stream's ``Last-Event-ID``), whose value and order
say nothing — not how many rows lie between two, nor which came first. Ids an outsider sends
back (``Last-Event-ID``, ``?after=``, a page's cursor) are mapped back before use, so lists stay
in time order and resuming loses and repeats nothing. HQ and admins see the rows' own ids.

How. A balanced Feistel network over 32 bits (two 16-bit halves, 10 rounds, as NIST's FF1 uses
for small domains) with keyed BLAKE2b as its round function is a pseudo-random permutation of
32-bit numbers (Luby and Rackoff); cycle-walking (Black and Rogaway, "Ciphers with arbitrary
finite domains", 2002) restricts it to the ids' own range, 1..``MAX_ID``. Shown ids therefore
fit the 32-bit range of row ids, and every id parameter of the API keeps its documented bounds.
0, "before the first row" (a stream that resumes from the start), is shown as itself. Each kind
of id has a permutation of its own (the kind personalises the round function), so an event and
a delivery with the same row id do not share a shown number.

The key. 32 random bytes, made by the first hub that needs them and kept in the database
(:class:`hub.models.HubSecret`, sealed like every secret: ``hub.sealing``). Not derived from
the position keys: rotating those (``natalia keys rotate`` re-seals this row, its value stays)
must not renumber what outsiders hold. Kept in the database, not in the config: every hub on one
PostgreSQL must show the same numbers, and whichever needs the key first creates its row (the
name is unique; the others read the row that won).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from hub.models import HubSecret
from sdk.models import MAX_ID

#: The name of the key's row in ``HubSecret``.
KEY_NAME = "outside_ids"
KEY_BYTES = 32
ROUNDS = 10
_HALF_BITS = 16
_HALF_MASK = (1 << _HALF_BITS) - 1


class IdKind(enum.StrEnum):
    """The tables whose ids are shown permuted outside HQ."""

    ALARM_EVENT = "alarm_event"
    DELIVERY = "delivery"


class Ids(Protocol):
    """How a caller sees a table's ids: ``shown`` for what it is given, ``raw`` for what it
    sends back."""

    def shown(self, raw: int) -> int: ...

    def raw(self, shown: int) -> int: ...


class RowIds:
    """The rows' own ids (HQ and admins)."""

    def shown(self, raw: int) -> int:
        return raw

    def raw(self, shown: int) -> int:
        return shown


ROW_IDS = RowIds()


class IdPermutation:
    """A keyed permutation of 0..``MAX_ID`` that keeps 0 in place: see the module's docstring."""

    def __init__(self, key: bytes, kind: IdKind) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an id key has {KEY_BYTES} bytes")
        self._round = hashlib.blake2b(key=key, person=kind.value.encode(), digest_size=4)

    def shown(self, raw: int) -> int:
        """The number shown outside HQ for row id ``raw``."""
        _check(raw)
        return 0 if raw == 0 else self._walk(raw - 1, self._encrypt) + 1

    def raw(self, shown: int) -> int:
        """The row id shown outside HQ as ``shown``."""
        _check(shown)
        return 0 if shown == 0 else self._walk(shown - 1, self._decrypt) + 1

    @staticmethod
    def _walk(value: int, step: Callable[[int], int]) -> int:
        """``step`` until the value is back in 0..MAX_ID-1 (cycle-walking): about two steps."""
        value = step(value)
        while value >= MAX_ID:
            value = step(value)
        return value

    def _encrypt(self, block: int) -> int:
        left, right = block >> _HALF_BITS, block & _HALF_MASK
        for number in range(ROUNDS):
            left, right = right, left ^ self._mix(number, right)
        return left << _HALF_BITS | right

    def _decrypt(self, block: int) -> int:
        left, right = block >> _HALF_BITS, block & _HALF_MASK
        for number in reversed(range(ROUNDS)):
            left, right = right ^ self._mix(number, left), left
        return left << _HALF_BITS | right

    def _mix(self, number: int, half: int) -> int:
        hashed = self._round.copy()
        hashed.update(bytes((number, half >> 8, half & 0xFF)))
        return int.from_bytes(hashed.digest(), "big") & _HALF_MASK


def _check(value: int) -> None:
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"ids are 0..{MAX_ID}, not {value}")


@dataclass(frozen=True)
class OutsideIds:
    """The permutations of one deployment, one per :class:`IdKind`."""

    events: IdPermutation
    deliveries: IdPermutation

    @classmethod
    def from_key(cls, key: bytes) -> OutsideIds:
        return cls(IdPermutation(key, IdKind.ALARM_EVENT), IdPermutation(key, IdKind.DELIVERY))


_loaded: weakref.WeakKeyDictionary[Engine, OutsideIds] = weakref.WeakKeyDictionary()
_loading = threading.Lock()


def outside_ids(engine: Engine) -> OutsideIds:
    """The deployment's permutations (the key is read, or made, once per engine)."""
    found = _loaded.get(engine)
    if found is None:
        with _loading:
            found = _loaded.get(engine)
            if found is None:
                found = _loaded[engine] = OutsideIds.from_key(deployment_key(engine))
    return found


def outside_ids_of(session: Session) -> OutsideIds:
    """:func:`outside_ids` of the database ``session`` works on."""
    bind = session.get_bind()
    return outside_ids(bind if isinstance(bind, Engine) else bind.engine)


def deployment_key(engine: Engine) -> bytes:
    """The key, made now if no hub has made it yet (the row that won a race is the key)."""
    with Session(engine) as session:
        row = session.get(HubSecret, KEY_NAME)
        if row is not None:
            return row.value
        session.add(HubSecret(name=KEY_NAME, value=secrets.token_bytes(KEY_BYTES)))
        try:
            session.commit()
        except IntegrityError:  # another hub on the same database made it first
            session.rollback()
    with Session(engine) as session:
        made = session.get(HubSecret, KEY_NAME)
        assert made is not None  # committed, by this hub or the one that won
        return made.value


__all__ = [
    "ROW_IDS",
    "IdKind",
    "IdPermutation",
    "Ids",
    "OutsideIds",
    "deployment_key",
    "outside_ids",
    "outside_ids_of",
]
