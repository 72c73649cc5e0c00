"""Server-sent events, as the alarm-event stream needs them: a line decoder and the reconnect rule.

The decoder follows the WHATWG ``EventSource`` rules that matter here: ``data`` lines join with
newlines, comment lines (``: keepalive``) are skipped, ``retry`` sets the reconnection delay, and
the last event id is committed only when its event is complete, so a connection that drops in
the middle of an event resumes *before* it, never after.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import ValidationError as PydanticValidationError

from sdk.errors import UnexpectedResponseError
from sdk.models import AlarmEvent

#: The first wait after a dropped connection unless the server sets one with ``retry:``.
DEFAULT_RECONNECT_DELAY = 1.0
#: However often reconnecting fails, never wait longer than this between tries.
MAX_RECONNECT_DELAY = 30.0
#: An idle stream still gets a keepalive every 15 s; this much silence means a dead connection.
DEFAULT_STREAM_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Feed it lines (without their line ending); it returns each event once complete."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = last_event_id

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def reset(self) -> None:
        """Forget a half-received event (the connection dropped); keep the last complete id."""
        self._event = ""
        self._data = []
        self._id = self.last_event_id

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id)
        self._event = ""
        self._data = []
        return event


def alarm_event(sse: ServerSentEvent) -> AlarmEvent:
    try:
        return AlarmEvent.model_validate_json(sse.data)
    except PydanticValidationError as exc:
        raise UnexpectedResponseError(
            f"the alarm-event stream sent an event that is not an AlarmEvent ({exc})",
            body=sse.data,
        ) from None


def reconnect_delay(failures: int, retry_ms: int | None) -> float:
    """The wait before reconnecting after ``failures`` failed tries in a row (0 after a drop).

    Starts at the server's ``retry:`` (or 1 s), doubles per failure up to 30 s, with jitter so
    that many dashboards do not reconnect to a restarted hub in the same instant.
    """
    first = retry_ms / 1000 if retry_ms is not None else DEFAULT_RECONNECT_DELAY
    ceiling = min(MAX_RECONNECT_DELAY, first * 2**failures)
    return random.uniform(ceiling / 2, ceiling) if failures else ceiling
