"""Is the hub alive and able to do its job? For ``/healthz`` and the dead-man file.

Healthy means: connected to the broker, the database answered in the last timer round, that
round is recent, and the hub is taking messages: none received from the broker has waited for
its acknowledgement longer than ``[health] max_unacked_age_s`` (a hub that holds messages back
holds the broker's in-flight window, and a full window stops every device's alarms). Messages
refused for internal errors (``internal_errors``) and telemetry ignored as too old
(``stale_telemetry``) are counted since start, for operators; they do not make the hub unhealthy.
A hub that is down writes nothing, so the check that matters runs *outside* it:
``scripts/deadman-check`` alarms when the file stops being rewritten.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Health:
    checked_at: datetime
    broker_connected: bool
    database_ok: bool
    last_round_at: datetime | None
    stale_after_s: float
    oldest_unacked_s: float | None = None  #: age of the oldest message not yet acknowledged
    unacked_messages: int = 0
    max_unacked_age_s: float = 60.0
    internal_errors: int = 0  #: messages refused because handling them failed, since start
    stale_telemetry: int = 0  #: heartbeats and locations too old to tell, ignored, since start

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.broker_connected:
            found.append("not connected to the broker")
        if not self.database_ok:
            found.append("the database did not answer")
        if self.last_round_at is None:
            found.append("no timer round yet")
        elif (self.checked_at - self.last_round_at).total_seconds() > self.stale_after_s:
            found.append("timer rounds have stopped")
        if self.oldest_unacked_s is not None and self.oldest_unacked_s > self.max_unacked_age_s:
            found.append(
                f"not taking messages: {self.unacked_messages} received and not acknowledged, "
                f"the oldest for {self.oldest_unacked_s:.0f} s (bound {self.max_unacked_age_s:g} s)"
            )
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        values = asdict(self)
        for key in ("checked_at", "last_round_at"):
            moment = values[key]
            values[key] = moment.isoformat() if moment is not None else None
        return {"status": "ok" if self.ok else "unhealthy", "problems": self.problems, **values}


def write_alive_file(path: Path, health: Health) -> None:
    """Atomically rewrite ``path`` while healthy; remove it when not, so it goes stale at once."""
    if not health.ok:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **health.as_json()}) + "\n")
    os.replace(tmp, path)
