"""Device-side library of Natalia: protocol v1 models, topics and the reference wristband client.

Importing this package needs only pydantic; :class:`Wristband` needs the ``device`` extra
(paho-mqtt) and is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devicekit.protocol import (
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    AckStage,
    Alarm,
    AlarmKind,
    Cancel,
    Command,
    Heartbeat,
    HubAck,
    Location,
    Position,
    Status,
    parse_device_message,
)
from devicekit.topics import parse_topic, topic

if TYPE_CHECKING:
    from devicekit.wristband import Wristband

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "AckStage",
    "Alarm",
    "AlarmKind",
    "Cancel",
    "Command",
    "Heartbeat",
    "HubAck",
    "Location",
    "Position",
    "Status",
    "Wristband",
    "parse_device_message",
    "parse_topic",
    "topic",
]


def __getattr__(name: str) -> Any:
    if name == "Wristband":
        from devicekit.wristband import Wristband

        return Wristband
    raise AttributeError(f"module 'devicekit' has no attribute {name!r}")
