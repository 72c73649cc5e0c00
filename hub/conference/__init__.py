"""Defenders' Days: events with sessions, registrations, announcements and training mode.

An event gathers defenders and guests; HQ sends announcements to every registration through the
same outbox and notifier plugins as alarms; training mode hands each defender a real training
wristband (a device with its own broker account) whose alarms are ``test`` alarms on the hub's
real alarm path, so participants exercise exactly what they will rely on.

- ``tables``: the rows.
- ``events``: events, sessions and registrations.
- ``announcements``: one outbox row per reachable registration.
- ``training``: kits (training wristbands) and training alarms.
"""

from hub.conference.errors import ConferenceConflict, ConferenceError, ConferenceNotFound

__all__ = ["ConferenceConflict", "ConferenceError", "ConferenceNotFound"]
