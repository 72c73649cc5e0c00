"""Following an append-only table in id order while other transactions are still writing to it.

A reader that remembers the last id it handed out and asks for ``id > last`` can miss rows on
PostgreSQL: an id is drawn from the sequence when the row is inserted, but the row becomes
visible when its transaction commits, and transactions commit in any order — id 41 may show up
after 42 was read. A rolled-back transaction leaves a hole that never fills. (SQLite has one
writer, so its ids appear in order and holes do not happen; the same code serves both.)

:class:`Settler` decides how far a reader may move on: rows go out in id order up to the first
hole; a hole is waited for, and stepped over once it is ``grace_s`` old — the hub's transactions
last milliseconds, so a hole that old is a rollback. The live stream and the webhooks both read
through one, so neither skips a row that commits a moment late nor sends one twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

#: How long a hole in the ids is waited for before the reader steps over it.
GAP_GRACE_S = 5.0


class Settler:
    """Remembers when each hole was first seen. One per reader: the reader's position only grows."""

    def __init__(
        self, grace_s: float = GAP_GRACE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self._holes: dict[int, float] = {}  #: first missing id -> when it was first seen missing
        self._lock = threading.Lock()

    def settle(self, after: int, ids: Sequence[int]) -> int:
        """How many of ``ids`` (ascending, all above ``after``, just read) may be handed out."""
        now = self._clock()
        expected = after + 1
        count = 0
        with self._lock:
            for row_id in ids:
                if row_id != expected:
                    first_seen = self._holes.setdefault(expected, now)
                    if now - first_seen < self.grace_s:
                        break
                count += 1
                expected = row_id + 1
            for hole in [hole for hole in self._holes if hole < expected]:
                del self._holes[hole]  # behind the reader now: filled or stepped over
        return count
