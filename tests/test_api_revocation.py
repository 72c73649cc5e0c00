"""Revoking a token takes back what it holds open: its live stream ends within seconds, and the
webhooks it created stop. A real hub, a real HTTP client reading the stream."""

from __future__ import annotations

from typing import Any

import httpx

from sdk.models import ApiRole
from tests.support.api import ApiHub
from tests.support.live import open_stream


def _new_token(api: ApiHub, role: ApiRole) -> dict[str, Any]:
    with api.client(ApiRole.ADMIN) as admin:
        made = admin.post("/v1/tokens", json={"name": f"dashboard-{role.value}", "role": role})
    assert made.status_code == 201, made.text
    token: dict[str, Any] = made.json()
    return token


def _revoke(api: ApiHub, token_id: int) -> None:
    with api.client(ApiRole.ADMIN) as admin:
        assert admin.delete(f"/v1/tokens/{token_id}").status_code == 200


def test_a_revoked_tokens_open_stream_ends_and_cannot_reopen(api: ApiHub) -> None:
    token = _new_token(api, ApiRole.READ_ONLY)
    headers = {"Authorization": f"Bearer {token['token']}"}
    # The read timeout (10 s) is shorter than the keepalive (15 s): a stream that stays open
    # after the revocation fails this test as a timeout instead of hanging it.
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=10) as client:
        with open_stream(client) as stream:
            assert next(stream).retry is not None
            _revoke(api, token["id"])
            try:
                rest = list(stream)
            except httpx.ReadTimeout:
                raise AssertionError("the stream stayed open after its token was revoked") from None
        again = client.get("/v1/alarm-events/stream")
    assert not any(message.is_event for message in rest)
    assert any("revoked" in comment for message in rest for comment in message.comments)
    assert again.status_code == 401


def test_revoking_a_token_stops_the_webhooks_it_created(api: ApiHub) -> None:
    token = _new_token(api, ApiRole.ADMIN)
    headers = {"Authorization": f"Bearer {token['token']}"}
    body = {"url": "https://receiver.example.org/hook", "events": ["alarm.*"]}
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=10) as thief:
        planted = thief.post("/v1/webhooks", json=body)
    assert planted.status_code == 201, planted.text
    with api.client(ApiRole.ADMIN) as admin:
        kept = admin.post("/v1/webhooks", json=body).json()
        _revoke(api, token["id"])
        after = admin.get(f"/v1/webhooks/{planted.json()['id']}").json()
        other = admin.get(f"/v1/webhooks/{kept['id']}").json()
    assert after["active"] is False
    assert other["active"] is True  # only what the revoked token created
