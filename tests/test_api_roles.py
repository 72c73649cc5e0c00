"""Every role tried on every route of the real API.

The expected matrix is written out here, independently of ``hub/api/permissions.py``: which
permission each route needs, and which roles hold each permission. A route added without an
entry here fails ``test_every_route_is_in_the_matrix``.
"""

from __future__ import annotations

import re

import httpx
import pytest

from hub.api.app import create_api
from sdk.models import ApiRole
from tests.support.api import ApiHub

A, H, N, R = ApiRole.ADMIN, ApiRole.HQ, ApiRole.INTEGRATION, ApiRole.READ_ONLY  # N: iNtegration

EXPECTED_ROLES = {
    "self": {A, H, N, R},
    "operations:read": {A, H, R},
    "contacts:read": {A, H},
    "operations:write": {A, H},
    "policies:write": {A},
    "alarms:read": {A, H, R},
    "alarms:act": {A, H},
    "fund:read": {A, H, N, R},
    "fund:write": {A, H, N},
    "fund:review": {A, H},
    "events:read": {A, H, N, R},
    "events:write": {A, H, N},
    "admin": {A},
}

ROUTES = {
    ("GET", "/v1/me"): "self",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{token_id}"): "admin",
    ("GET", "/v1/defenders"): "operations:read",
    ("POST", "/v1/defenders"): "operations:write",
    ("GET", "/v1/defenders/{defender_id}"): "operations:read",
    ("PATCH", "/v1/defenders/{defender_id}"): "operations:write",
    ("PUT", "/v1/defenders/{defender_id}/codes"): "operations:write",
    ("GET", "/v1/devices"): "operations:read",
    ("POST", "/v1/devices"): "operations:write",
    ("GET", "/v1/devices/{device_id}"): "operations:read",
    ("POST", "/v1/devices/{device_id}/suspend"): "operations:write",
    ("POST", "/v1/devices/{device_id}/revoke"): "operations:write",
    ("POST", "/v1/devices/{device_id}/resume"): "operations:write",
    ("GET", "/v1/contacts"): "contacts:read",
    ("POST", "/v1/contacts"): "operations:write",
    ("GET", "/v1/contacts/{contact_id}"): "contacts:read",
    ("PATCH", "/v1/contacts/{contact_id}"): "operations:write",
    ("GET", "/v1/responders"): "contacts:read",
    ("POST", "/v1/responders"): "operations:write",
    ("GET", "/v1/responders/{responder_id}"): "contacts:read",
    ("PATCH", "/v1/responders/{responder_id}"): "operations:write",
    ("GET", "/v1/policies"): "operations:read",
    ("GET", "/v1/policies/{name}"): "operations:read",
    ("PUT", "/v1/policies/{name}"): "policies:write",
    ("GET", "/v1/alarms"): "alarms:read",
    ("GET", "/v1/alarms/{alarm_id}"): "alarms:read",
    ("GET", "/v1/alarms/{alarm_id}/events"): "alarms:read",
    ("GET", "/v1/alarms/{alarm_id}/deliveries"): "alarms:read",
    ("POST", "/v1/alarms/{alarm_id}/acknowledge"): "alarms:act",
    ("POST", "/v1/alarms/{alarm_id}/verify"): "alarms:act",
    ("POST", "/v1/alarms/{alarm_id}/escalate"): "alarms:act",
    ("POST", "/v1/alarms/{alarm_id}/resolve"): "alarms:act",
    ("POST", "/v1/alarms/{alarm_id}/false-alarm"): "alarms:act",
    ("GET", "/v1/alarm-events"): "alarms:read",
    ("GET", "/v1/alarm-events/stream"): "alarms:read",
    ("GET", "/v1/deliveries"): "alarms:read",
    ("GET", "/v1/rejected-messages"): "alarms:read",
    ("POST", "/v1/rejected-messages/{rejected_id}/review"): "alarms:act",
    ("GET", "/v1/webhooks"): "admin",
    ("POST", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}"): "admin",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "admin",
    ("GET", "/v1/fund-requests"): "fund:read",
    ("POST", "/v1/fund-requests"): "fund:write",
    ("GET", "/v1/fund-requests/{request_id}"): "fund:read",
    ("PATCH", "/v1/fund-requests/{request_id}"): "fund:write",
    ("POST", "/v1/fund-requests/{request_id}/transitions"): "fund:review",
    ("GET", "/v1/fund-requests/{request_id}/history"): "fund:read",
    ("GET", "/v1/events"): "events:read",
    ("POST", "/v1/events"): "events:write",
    ("GET", "/v1/events/{event_id}"): "events:read",
    ("GET", "/v1/events/{event_id}/sessions"): "events:read",
    ("POST", "/v1/events/{event_id}/sessions"): "events:write",
    ("GET", "/v1/events/{event_id}/registrations"): "events:read",
    ("POST", "/v1/events/{event_id}/registrations"): "events:write",
    ("GET", "/v1/events/{event_id}/registrations/{registration_id}"): "events:read",
    ("DELETE", "/v1/events/{event_id}/registrations/{registration_id}"): "events:write",
    ("GET", "/v1/events/{event_id}/announcements"): "events:read",
    ("POST", "/v1/events/{event_id}/announcements"): "events:write",
    ("GET", "/v1/events/{event_id}/training"): "events:read",
    ("POST", "/v1/events/{event_id}/training"): "operations:write",
    ("DELETE", "/v1/events/{event_id}/training"): "operations:write",
    ("POST", "/v1/events/{event_id}/training/alarms"): "operations:write",
}


def served_routes() -> set[tuple[str, str]]:
    app = create_api(None)
    found = set()
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            found.add((method.upper(), path))
    return found


def test_every_route_is_in_the_matrix() -> None:
    assert served_routes() == set(ROUTES)


def _concrete(path: str) -> str:
    """Fill path parameters with ids nothing has (a DELETE must not revoke a test token)."""
    return re.sub(r"\{[^}]+\}", "999999", path)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES), ids=lambda v: str(v))
def test_each_role_on_each_route(api: ApiHub, method: str, path: str) -> None:
    allowed = EXPECTED_ROLES[ROUTES[(method, path)]]
    url = _concrete(path)
    for role in ApiRole:
        with api.client(role) as client:
            if path.endswith("/stream"):
                with client.stream(method, url, timeout=10) as response:
                    status = response.status_code
            else:
                # A body that is never valid: a permitted role gets 4xx for it, never 401/403.
                body = {"not-a-field": True} if method in ("POST", "PUT", "PATCH") else None
                status = client.request(method, url, json=body).status_code
        if role in allowed:
            assert status not in (401, 403), (role, method, path, status)
            assert status < 500, (role, method, path, status)
        else:
            assert status == 403, (role, method, path, status)
    with api.client(role=None) as anonymous:
        if path.endswith("/stream"):
            with anonymous.stream(method, url) as response:
                assert response.status_code == 401
        else:
            assert anonymous.request(method, url).status_code == 401


def test_a_permitted_role_really_gets_through(api: ApiHub) -> None:
    """The matrix above would pass if every route answered 422: show one real success per role."""
    for role in ApiRole:
        with api.client(role) as client:
            assert client.get("/v1/me").json()["role"] == role.value
    with api.client(ApiRole.READ_ONLY) as client:
        assert client.get("/v1/alarms").status_code == 200
        assert client.get("/v1/fund-requests").status_code == 200
    with api.client(ApiRole.INTEGRATION) as client:
        assert client.get("/v1/events").status_code == 200
        assert client.get("/v1/alarms").status_code == 403
    with api.client(ApiRole.HQ) as client:
        assert client.get("/v1/webhooks").status_code == 403
        assert client.post("/v1/defenders", json={"name": "Role test"}).status_code == 201


def test_client_errors_never_leak_the_token(api: ApiHub) -> None:
    token = api.tokens[ApiRole.INTEGRATION]
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}) as c:
        response = c.get("/v1/alarms")
    assert token not in response.text
