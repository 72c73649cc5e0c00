"""MQTT topic names of protocol v1: ``natalia/v1/devices/{device_id}/{channel}``."""

from __future__ import annotations

from typing import NamedTuple

from devicekit.protocol import DEVICE_CHANNELS, HUB_CHANNELS, ID_RE

PREFIX = "natalia/v1/devices"


class DeviceTopic(NamedTuple):
    device_id: str
    channel: str


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it can be a username, client id and topic segment; else raise."""
    if not ID_RE.fullmatch(device_id):
        raise ValueError(
            f"invalid device id {device_id!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return device_id


def topic(device_id: str, channel: str) -> str:
    """The topic of ``channel`` for ``device_id``."""
    if channel not in DEVICE_CHANNELS + HUB_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return f"{PREFIX}/{validate_device_id(device_id)}/{channel}"


def subscription(channel: str) -> str:
    """The wildcard subscription the hub uses for ``channel`` of every device."""
    if channel not in DEVICE_CHANNELS:
        raise ValueError(f"unknown device channel {channel!r}")
    return f"{PREFIX}/+/{channel}"


def parse_topic(name: str) -> DeviceTopic:
    """Split a device topic into device id and channel; raise ``ValueError`` if it is not one."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX:
        raise ValueError(f"not a natalia v1 device topic: {name!r}")
    device_id, channel = parts[3], parts[4]
    validate_device_id(device_id)
    if channel not in DEVICE_CHANNELS + HUB_CHANNELS:
        raise ValueError(f"unknown channel {channel!r} in topic {name!r}")
    return DeviceTopic(device_id, channel)
