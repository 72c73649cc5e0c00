"""What each API role may do. Every route names exactly one permission (see ``hub.api.auth``).

This table is the whole access policy; ``tests/test_api_roles.py`` holds an independent copy of
the expected matrix and tries every role on every route.
"""

from __future__ import annotations

import enum

from sdk.models import ApiRole


class Permission(enum.StrEnum):
    OPERATIONS_READ = "operations:read"  #: defenders, devices, policies
    #: contacts and responders, and who was told (names and channels in timelines, deliveries)
    CONTACTS_READ = "contacts:read"
    OPERATIONS_WRITE = "operations:write"  #: register and change them
    POLICIES_WRITE = "policies:write"  #: escalation policies
    ALARMS_READ = "alarms:read"  #: alarms, timelines, deliveries, the live stream
    ALARMS_ACT = "alarms:act"  #: acknowledge, verify, escalate, resolve, mark false
    FUND_READ = "fund:read"
    FUND_WRITE = "fund:write"  #: submit and edit requests
    FUND_REVIEW = "fund:review"  #: move requests through review
    EVENTS_READ = "events:read"  #: Defenders' Days
    EVENTS_WRITE = "events:write"  #: events, sessions, registrations, announcements, training
    ADMIN = "admin"  #: tokens and webhooks
    SELF = "self"  #: who am I (every valid token)


_EVERYONE = frozenset(ApiRole)

ROLE_PERMISSIONS: dict[ApiRole, frozenset[Permission]] = {
    ApiRole.ADMIN: frozenset(Permission),
    ApiRole.HQ: frozenset(Permission) - {Permission.ADMIN, Permission.POLICIES_WRITE},
    ApiRole.INTEGRATION: frozenset(
        {
            Permission.FUND_READ,
            Permission.FUND_WRITE,
            Permission.EVENTS_READ,
            Permission.EVENTS_WRITE,
            Permission.SELF,
        }
    ),
    ApiRole.READ_ONLY: frozenset(
        {
            Permission.OPERATIONS_READ,
            Permission.ALARMS_READ,
            Permission.FUND_READ,
            Permission.EVENTS_READ,
            Permission.SELF,
        }
    ),
}


def allows(role: ApiRole, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def roles_with(permission: Permission) -> list[ApiRole]:
    return [role for role in ApiRole if allows(role, permission)]
