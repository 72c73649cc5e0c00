"""The API's common ground on a real hub: authentication, the error shape, pagination."""

from __future__ import annotations

import httpx

from sdk.models import ApiRole
from tests.support.api import ApiHub


def test_no_token_is_a_401_problem_with_a_bearer_challenge(api: ApiHub) -> None:
    with api.client(role=None) as client:
        response = client.get("/v1/defenders")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["code"] == "unauthenticated" and body["status"] == 401
    assert body["type"].endswith("/unauthenticated")


def test_an_unknown_token_is_a_401(api: ApiHub) -> None:
    with httpx.Client(base_url=api.base_url, headers={"Authorization": "Bearer nat_nope"}) as c:
        assert c.get("/v1/me").status_code == 401


def test_a_revoked_token_stops_working_at_once(api: ApiHub) -> None:
    with api.client() as admin:
        created = admin.post("/v1/tokens", json={"name": "temp", "role": "read_only"}).json()
        headers = {"Authorization": f"Bearer {created['token']}"}
        assert admin.get("/v1/me", headers=headers).json()["role"] == "read_only"
        assert admin.delete(f"/v1/tokens/{created['id']}").json()["revoked_at"]
        assert admin.get("/v1/me", headers=headers).status_code == 401
        listed = admin.get("/v1/tokens", params={"limit": 200}).json()["items"]
    assert all("token" not in item and "token_hash" not in item for item in listed)
    assert created["prefix"] == created["token"][:12]


def test_a_role_without_the_permission_gets_a_403(api: ApiHub) -> None:
    with api.client(ApiRole.READ_ONLY) as client:
        response = client.post("/v1/defenders", json={"name": "X"})
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert "operations:write" in response.json()["detail"]


def test_validation_errors_list_the_fields(api: ApiHub) -> None:
    with api.client() as client:
        response = client.post("/v1/defenders", json={"name": "", "colour": "red"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "name"), ("body", "colour")}


def test_pages_walk_every_row_once(api: ApiHub) -> None:
    with api.client() as client:
        made = {client.post("/v1/defenders", json={"name": f"P{i}"}).json()["id"] for i in range(7)}
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/defenders", params=params).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert made <= set(seen) and len(seen) == len(set(seen))
    assert seen == sorted(seen)


def test_a_forged_cursor_is_a_400(api: ApiHub) -> None:
    with api.client() as client:
        response = client.get("/v1/defenders", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400 and response.json()["code"] == "bad_cursor"


def test_unknown_ids_are_404_problems(api: ApiHub) -> None:
    with api.client() as client:
        response = client.get("/v1/defenders/999999")
    assert response.status_code == 404
    assert response.json() == {
        "type": "https://natalia.example/problems/not-found",
        "title": "Not found",
        "status": 404,
        "code": "not_found",
        "detail": "no defender 999999",
        "errors": [],
    }


def test_a_defender_round_trip(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        made = client.post(
            "/v1/defenders", json={"name": "Ana", "timezone": "Europe/Moscow", "language": "ru"}
        )
        assert made.status_code == 201, made.text
        defender_id = made.json()["id"]
        bad = client.patch(f"/v1/defenders/{defender_id}", json={"timezone": "Mars/Base"})
        assert bad.status_code == 422 and "Mars/Base" in bad.json()["detail"]
        codes = client.put(
            f"/v1/defenders/{defender_id}/codes",
            json={"cancel_code": "1111", "duress_code": "2222"},
        )
        assert codes.status_code == 204
        got = client.get(f"/v1/defenders/{defender_id}").json()
    assert got["timezone"] == "Europe/Moscow" and got["codes_set"] is True


def test_no_answer_may_be_cached(api: ApiHub) -> None:
    with api.client() as client:
        created = client.post("/v1/tokens", json={"name": "cache", "role": "read_only"})
        missing = client.get("/v1/defenders/999999")
    assert created.headers["cache-control"] == "no-store"
    assert missing.headers["cache-control"] == "no-store"


def test_nul_characters_are_refused_before_any_database_sees_them(api: ApiHub) -> None:
    with api.client() as client:
        response = client.post("/v1/defenders", json={"name": "a\u0000b"})
    assert response.status_code == 422
    assert "NUL" in response.json()["errors"][0]["msg"]


def test_a_cursor_past_any_id_is_a_400_not_a_database_error(api: ApiHub) -> None:
    import base64

    huge = base64.urlsafe_b64encode(b"v1:99999999999999999999").decode().rstrip("=")
    with api.client() as client:
        response = client.get("/v1/defenders", params={"cursor": huge})
    assert response.status_code == 400 and response.json()["code"] == "bad_cursor"
