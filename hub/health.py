"""Is the hub alive and able to do its job? For ``/healthz`` and the dead-man file.

Healthy means: connected to the broker, the database answered in the last timer round, and
that round is recent. A hub that is down writes nothing, so the check that matters runs
*outside* it: ``scripts/deadman-check`` alarms when the file stops being rewritten.
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
