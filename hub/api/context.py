"""What the API's routes need from the hub, in one object on ``app.state.api``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from hub.clock import Clock, SystemClock
from hub.egress import EgressPolicy
from hub.lifecycle import Lifecycle
from hub.plugin_manager import NotifierRegistry


def _nothing() -> None:
    return None


@dataclass
class ApiContext:
    """``engine`` is the API's own (its pool is not the alarm path's database thread).

    ``on_change`` tells the hub that rows it acts on changed (an HQ action queued messages, a
    fund request was reviewed...): it must be safe to call from any thread.
    """

    engine: Engine
    registry: NotifierRegistry
    broker_data_dir: Path | None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    clock: Clock = field(default_factory=SystemClock)
    on_change: Callable[[], None] = _nothing
    #: How often the live stream looks for new alarm events (one query for all listeners).
    stream_poll_s: float = 0.5
    #: Comment lines keep idle streams open through proxies.
    stream_keepalive_s: float = 15.0
    #: How often open streams check that their token still allows them (revoked, expired...).
    token_check_s: float = 2.0
    #: Where URLs given through the API may point (hub/egress.py); None: not checked.
    egress: EgressPolicy | None = None
