"""One module per resource; each exposes ``router``. ``ROUTERS`` is what ``create_api`` mounts."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.routes import (
    alarm_actions,
    alarms,
    contacts,
    defenders,
    deliveries,
    devices,
    events,
    events_training,
    fund,
    policies,
    rejected,
    responders,
    stream,
    tokens,
    webhooks,
)

ROUTERS: list[APIRouter] = [
    tokens.router,
    defenders.router,
    devices.router,
    contacts.router,
    responders.router,
    policies.router,
    stream.router,  # before any /alarm-events/{id} route
    alarms.router,
    alarm_actions.router,
    deliveries.router,
    rejected.router,
    events.router,
    events_training.router,
    fund.router,
    webhooks.router,
]
