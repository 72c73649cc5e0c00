"""Supervision of the wristband: silent, offline (last will), back, low battery.

A device that stops reporting may have been taken or destroyed: HQ hears of it (and, if the
policy says so, the defender's contacts), and a silent device during an active alarm escalates
the alarm at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from hub.escalation import policy_for
from hub.lifecycle import Lifecycle
from hub.messages import MessageFacts
from hub.models import CLOSED_STATES, Alarm, AlarmState, Defender, Device, DeviceEvent, Role
from hub.outbox import queue
from hub.recipients import contacts_with_roles

BATTERY_HYSTERESIS = 5


def _report(
    session: Session,
    device: Device,
    kind: str,
    detail: str,
    now: datetime,
    contacts_too: bool = False,
    **facts: object,
) -> DeviceEvent:
    """Record a device event and queue a message about it to HQ (and contacts if asked)."""
    defender = session.get(Defender, device.defender_id)
    assert defender is not None
    device_event = DeviceEvent(device_id=device.id, at=now, kind=kind, detail=detail)
    session.add(device_event)
    session.flush()
    roles = (Role.HQ, Role.TRUSTED) if contacts_too else (Role.HQ,)
    message_facts = MessageFacts(
        ref=f"D{device_event.id}",
        kind="",
        defender=defender.name,
        timezone=defender.timezone,
        device_id=device.id,
        device_ts=device.last_seen_at or now,
        lat=None,
        lon=None,
        accuracy_m=None,
        fix_ts=None,
        battery=device.battery,
        at=now,
        **facts,  # type: ignore[arg-type]
    )
    for target in contacts_with_roles(session, defender.id, roles):
        if target.role is Role.HQ or target.role in roles:
            queue(
                session,
                f"D{device_event.id}:{target.key}",
                target,
                kind,
                message_facts,
                device_event_pk=device_event.id,
            )
    return device_event


def record_heartbeat(
    session: Session, device: Device, interval_s: int, battery: int | None, now: datetime
) -> None:
    device.heartbeat_interval_s = interval_s
    mark_seen(session, device, now)
    if battery is not None:
        record_battery(session, device, battery, now)


def record_status(
    session: Session, device: Device, online: bool, now: datetime, lifecycle: Lifecycle
) -> None:
    device.online = online
    if online:
        mark_seen(session, device, now)
        return
    # The broker published the device's last will (or the device said goodbye): from now on
    # it cannot raise an alarm, so this is reported like silence.
    if device.silent_since is None:
        device.silent_since = now
        _report(
            session,
            device,
            "device_offline",
            "the broker reported the device offline",
            now,
            contacts_too=_policy(session, device).notify_contacts_on_silence,
        )
        _escalate_active(session, device, now, lifecycle, "device went offline during the alarm")
    session.add(device)


def record_battery(session: Session, device: Device, battery: int, now: datetime) -> None:
    device.battery = battery
    threshold = _policy(session, device).low_battery_percent
    if battery <= threshold and not device.battery_low:
        device.battery_low = True
        _report(session, device, "low_battery", f"battery at {battery}%", now)
    elif battery > threshold + BATTERY_HYSTERESIS and device.battery_low:
        device.battery_low = False
    session.add(device)


def check_silent_devices(session: Session, now: datetime, lifecycle: Lifecycle) -> list[str]:
    """Devices past their heartbeat interval plus grace become silent (once until heard again)."""
    found = []
    query = select(Device).where(
        Device.active,
        col(Device.silent_since).is_(None),
        col(Device.heartbeat_interval_s).is_not(None),
        col(Device.last_seen_at).is_not(None),
    )
    for device in session.exec(query):
        policy = _policy(session, device)
        assert device.last_seen_at is not None and device.heartbeat_interval_s is not None
        deadline = device.last_seen_at + timedelta(
            seconds=device.heartbeat_interval_s + policy.silence_grace_s
        )
        if now <= deadline:
            continue
        device.silent_since = now
        session.add(device)
        _report(
            session,
            device,
            "device_silent",
            f"no heartbeat since {device.last_seen_at.isoformat(timespec='seconds')}",
            now,
            contacts_too=policy.notify_contacts_on_silence,
            interval_s=device.heartbeat_interval_s,
        )
        _escalate_active(session, device, now, lifecycle, "device silent during the alarm")
        found.append(device.id)
    return found


def mark_seen(session: Session, device: Device, now: datetime) -> None:
    """Any message proves the device alive: a silent device is back."""
    device.last_seen_at = now
    if device.silent_since is not None:
        device.silent_since = None
        session.add(
            DeviceEvent(device_id=device.id, at=now, kind="device_back", detail="reporting again")
        )
    session.add(device)


def _escalate_active(
    session: Session, device: Device, now: datetime, lifecycle: Lifecycle, reason: str
) -> None:
    defender = session.get(Defender, device.defender_id)
    assert defender is not None
    closed = [state.value for state in CLOSED_STATES]
    active = session.exec(
        select(Alarm).where(Alarm.device_id == device.id, col(Alarm.state).not_in(closed))
    )
    for alarm in active:
        lifecycle.escalate_now(session, alarm, defender, "hub", now, reason)


def _policy(session: Session, device: Device):  # type: ignore[no-untyped-def]
    defender = session.get(Defender, device.defender_id)
    assert defender is not None
    return policy_for(session, defender)


__all__ = [
    "AlarmState",
    "check_silent_devices",
    "record_battery",
    "record_heartbeat",
    "record_status",
]
