"""Lanes of the database thread: which work goes first, and whose it is (hub/database.py).

A job's lane is a priority class and an account. The ingest sets ``current_lane`` for each
message it handles (hub/admission.py); everything else the hub does runs in ``HUB_LANE``.
"""

from __future__ import annotations

import contextvars
import enum
from typing import NamedTuple


class Priority(enum.IntEnum):
    """What the database thread serves first (lowest value first)."""

    ALARM = 0  #: alarms and cancels, and the hub's own work (deliveries, timers, API)
    TELEMETRY = 1  #: heartbeats, locations, status, responders' positions
    REFUSAL = 2  #: keeping a refused message


class Lane(NamedTuple):
    priority: Priority
    account: str  #: whose work it is: a device id, ``owntracks:USER``, or ``hub``


HUB_LANE = Lane(Priority.ALARM, "hub")
#: The lane of the database work the current task asks for (set per message by the ingest).
current_lane: contextvars.ContextVar[Lane] = contextvars.ContextVar(
    "current_lane", default=HUB_LANE
)
