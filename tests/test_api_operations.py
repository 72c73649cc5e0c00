"""Devices, contacts, responders and policies through the API of a real hub (Mosquitto, SQLite).

The hub is shared by the module: every test makes its own defenders and names.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from broker import HUB_USER
from hub.db import make_engine
from hub.responders import record_position_by_id
from sdk.models import ApiRole
from tests.support.api import ApiHub, new_defender, unique, walk
from tests.support.brokers import try_connect
from tests.support.receivers import wait_until


def accepts_login(api: ApiHub, username: str, password: str) -> bool:
    return try_connect(api.broker.host, api.broker.port, username, password) == 0


# -- devices -----------------------------------------------------------------------------------


def test_registering_a_device_creates_its_broker_account(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client)
        device_id = unique("wb-reg")
        made = client.post("/v1/devices", json={"id": device_id, "defender_id": defender_id})
        assert made.status_code == 201, made.text
        creds = made.json()
        got = client.get(f"/v1/devices/{device_id}").json()
    assert creds["device_id"] == device_id and creds["broker_reloaded"] is True
    assert len(creds["password"]) >= 24
    wait_until(lambda: accepts_login(api, device_id, creds["password"]))
    assert not accepts_login(api, device_id, "not-the-password")
    assert got["defender_id"] == defender_id and got["active"] is True
    assert "password" not in got


def test_a_taken_device_id_is_a_409_and_no_account_is_replaced(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client)
        device_id = unique("wb-dup")
        first = client.post("/v1/devices", json={"id": device_id, "defender_id": defender_id})
        again = client.post("/v1/devices", json={"id": device_id, "defender_id": defender_id})
        hub = client.post("/v1/devices", json={"id": HUB_USER, "defender_id": defender_id})
        responder = client.post(
            "/v1/responders",
            json={"name": "R", "channel_url": "console://", "mqtt_user": unique("rider")},
        ).json()
        theirs = client.post(
            "/v1/devices", json={"id": responder["mqtt_user"], "defender_id": defender_id}
        )
    assert (again.status_code, again.json()["code"]) == (409, "conflict")
    assert "is already registered" in again.json()["detail"]
    assert hub.status_code == 409 and "broker account" in hub.json()["detail"]
    assert theirs.status_code == 409 and "responder" in theirs.json()["detail"]
    password = first.json()["password"]
    assert api.broker.accounts.check(device_id, password)
    assert api.broker.accounts.check(HUB_USER, api.broker.hub_password)
    assert api.broker.accounts.check(responder["mqtt_user"], responder["mqtt_password"])
    assert "password" not in again.text and "password" not in hub.text


def test_device_registration_errors(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        unknown = client.post("/v1/devices", json={"id": unique("wb-x"), "defender_id": 999999})
        bad_id = client.post("/v1/devices", json={"id": "wb 1/#", "defender_id": 1})
        missing = client.get("/v1/devices/wb-never")
    with api.client(ApiRole.READ_ONLY) as reader:
        forbidden = reader.post("/v1/devices", json={"id": unique("wb-x"), "defender_id": 1})
    assert unknown.status_code == 422 and "no defender with id 999999" in unknown.json()["detail"]
    assert bad_id.status_code == 422 and bad_id.json()["errors"][0]["loc"] == ["body", "id"]
    assert missing.status_code == 404 and missing.json()["detail"] == "no device wb-never"
    assert forbidden.status_code == 403


def test_devices_are_listed_lowest_id_first_per_defender(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client)
        other = new_defender(client)
        mine = [f"wb-list-{n}" for n in ("c", "a", "e", "b", "d")]
        for device_id in mine:
            body = {"id": device_id, "defender_id": defender_id}
            assert client.post("/v1/devices", json=body).status_code == 201
        body = {"id": "wb-list-0", "defender_id": other}
        assert client.post("/v1/devices", json=body).status_code == 201
        listed = walk(client, "/v1/devices", 2, defender_id=defender_id)
        everyone = walk(client, "/v1/devices", 3)
        forged = client.get("/v1/devices", params={"cursor": "bm9wZQ"})
    assert [d["id"] for d in listed] == sorted(mine)
    ids = [d["id"] for d in everyone]
    assert ids == sorted(ids) and set(mine) | {"wb-list-0"} <= set(ids)
    assert forged.status_code == 400 and forged.json()["code"] == "bad_cursor"


# -- contacts ------------------------------------------------------------------------------------

SECRET_MAIL = "mailto://duty:Sm7pSecretPw@mail.example.org?to=duty@example.org"
SECRET_JSON = "json://hook:JsonSecretPw@127.0.0.1:9/alerts"
SECRET_BOT = "tgram://123456:ABCDEFBotSecret/987"


def test_contacts_never_show_their_secrets(api: ApiHub) -> None:
    secrets = ("Sm7pSecretPw", "JsonSecretPw", "ABCDEFBotSecret")
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client)
        made = client.post(
            "/v1/contacts",
            json={
                "name": "Sister",
                "channel_url": SECRET_MAIL,
                "defender_id": defender_id,
                "fallback_urls": [SECRET_JSON, SECRET_BOT],
            },
        )
        assert made.status_code == 201, made.text
        contact_id = made.json()["id"]
        responses = [
            made,
            client.get(f"/v1/contacts/{contact_id}"),
            client.get("/v1/contacts", params={"defender_id": defender_id}),
            client.patch(f"/v1/contacts/{contact_id}", json={"name": "Big sister"}),
        ]
    for response in responses:
        assert response.status_code == 200 or response.status_code == 201
        assert not any(secret in response.text for secret in secrets), response.text
    contact = responses[1].json()
    # The addressee, paths and chat ids are identities: only the server shows (test_masking.py).
    assert contact["channel"] == "mailto://***@mail.example.org/***"
    assert contact["fallbacks"] == ["json://***@127.0.0.1:9/***", "tgram://***"]
    assert (contact["role"], contact["receives_tests"]) == ("trusted", False)
    assert responses[3].json()["name"] == "Big sister"


def test_contacts_are_filtered_by_defender_and_role(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client)
        trusted = client.post(
            "/v1/contacts",
            json={"name": "Friend", "channel_url": "console://", "defender_id": defender_id},
        ).json()
        partner = client.post(
            "/v1/contacts",
            json={
                "name": "NGO",
                "channel_url": "console://",
                "defender_id": defender_id,
                "role": "partner",
                "language": "ru",
            },
        ).json()
        hq = client.post("/v1/contacts", json={"name": "Duty", "channel_url": "console://"}).json()
        ids = [c["id"] for c in walk(client, "/v1/contacts", 1, defender_id=defender_id)]
        partners = walk(client, "/v1/contacts", 50, defender_id=defender_id, role="partner")
        everyone_hq = walk(client, "/v1/contacts", 50, role="hq")
        bad_role = client.get("/v1/contacts", params={"role": "nearby"})
    assert ids == [trusted["id"], partner["id"]]
    assert [c["id"] for c in partners] == [partner["id"]] and partners[0]["language"] == "ru"
    assert hq["role"] == "hq" and hq["defender_id"] is None and hq["receives_tests"] is True
    assert hq["id"] in {c["id"] for c in everyone_hq}
    assert bad_role.status_code == 422


def test_contact_errors(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client)
        no_plugin = client.post(
            "/v1/contacts",
            json={"name": "X", "channel_url": "console://", "fallback_urls": ["nope://secret"]},
        )
        bad_console = client.post(
            "/v1/contacts", json={"name": "X", "channel_url": "console://printer"}
        )
        no_defender = client.post(
            "/v1/contacts",
            json={"name": "X", "channel_url": "console://", "defender_id": 999999},
        )
        hq_of_defender = client.post(
            "/v1/contacts",
            json={
                "name": "X",
                "channel_url": "console://",
                "defender_id": defender_id,
                "role": "hq",
            },
        )
        missing = client.get("/v1/contacts/999999")
        patch_missing = client.patch("/v1/contacts/999999", json={"active": False})
        made = client.post("/v1/contacts", json={"name": "Y", "channel_url": "console://"}).json()
        no_url_change = client.patch(
            f"/v1/contacts/{made['id']}", json={"channel_url": "console://stderr"}
        )
        deactivated = client.patch(f"/v1/contacts/{made['id']}", json={"active": False})
    assert no_plugin.status_code == 422
    assert "no notifier plugin handles nope://" in no_plugin.json()["detail"]
    assert "secret" not in no_plugin.json()["detail"]
    assert bad_console.status_code == 422 and "prints to stdout" in bad_console.json()["detail"]
    assert no_defender.status_code == 422 and "no defender" in no_defender.json()["detail"]
    assert hq_of_defender.status_code == 422
    assert missing.status_code == 404 and patch_missing.status_code == 404
    assert no_url_change.status_code == 422
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False


# -- responders ----------------------------------------------------------------------------------


def test_a_responder_with_a_username_gets_a_broker_account_once(api: ApiHub) -> None:
    user = unique("responder")
    with api.client(ApiRole.HQ) as client:
        made = client.post(
            "/v1/responders",
            json={
                "name": "Ana",
                "channel_url": SECRET_BOT,
                "mqtt_user": user,
                "radius_m": 2500,
                "fallback_urls": ["console://"],
                "receives_tests": True,
            },
        )
        assert made.status_code == 201, made.text
        responder = made.json()
        again = client.get(f"/v1/responders/{responder['id']}")
        taken = client.post(
            "/v1/responders", json={"name": "B", "channel_url": "console://", "mqtt_user": user}
        )
        hub = client.post(
            "/v1/responders",
            json={"name": "H", "channel_url": "console://", "mqtt_user": HUB_USER},
        )
    wait_until(lambda: accepts_login(api, user, responder["mqtt_password"]))
    assert responder["channel"] == "tgram://***" and responder["fallbacks"] == ["console://"]
    assert (responder["radius_m"], responder["receives_tests"]) == (2500, True)
    assert "ABCDEFBotSecret" not in made.text + again.text
    assert "mqtt_password" not in again.json() and again.json()["mqtt_user"] == user
    assert taken.status_code == 409 and f"already uses username {user!r}" in taken.json()["detail"]
    assert hub.status_code == 409 and "hub's own broker account" in hub.json()["detail"]
    assert api.broker.accounts.check(user, responder["mqtt_password"])


def test_a_responder_without_a_username_has_no_account(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        made = client.post("/v1/responders", json={"name": "Boris", "channel_url": "console://"})
    assert made.status_code == 201
    assert made.json()["mqtt_user"] is None and made.json()["mqtt_password"] is None
    assert "Boris" not in api.broker.accounts.usernames()


def test_responders_show_when_their_position_came_never_where(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        made = client.post("/v1/responders", json={"name": "Chen", "channel_url": "console://"})
        responder_id = made.json()["id"]
        engine = make_engine(api.database_url)
        at = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
        record_position_by_id(engine, responder_id, 59.123456, 18.654321, 7.5, at, now=at)
        engine.dispose()
        one = client.get(f"/v1/responders/{responder_id}")
        listed = walk(client, "/v1/responders", 2)
    assert one.json()["position_at"] == "2025-05-01T12:00:00Z"
    mine = [r for r in listed if r["id"] == responder_id]
    assert mine == [one.json()]
    for text in (one.text, str(listed)):
        assert "59.12" not in text and "18.65" not in text and "lat" not in text
    assert [r["id"] for r in listed] == sorted(r["id"] for r in listed)


def test_responders_are_updated_and_checked(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        made = client.post("/v1/responders", json={"name": "Dana", "channel_url": "console://"})
        responder_id = made.json()["id"]
        off = client.patch(
            f"/v1/responders/{responder_id}",
            json={"available": False, "radius_m": 800, "language": "es"},
        )
        zero = client.patch(f"/v1/responders/{responder_id}", json={"radius_m": 0})
        missing = client.patch("/v1/responders/999999", json={"available": True})
        no_plugin = client.post("/v1/responders", json={"name": "E", "channel_url": "nope://x"})
        bad_user = client.post(
            "/v1/responders",
            json={"name": "F", "channel_url": "console://", "mqtt_user": "-no/good"},
        )
        gone = client.get("/v1/responders/999999")
    assert off.status_code == 200
    assert (off.json()["available"], off.json()["radius_m"], off.json()["language"]) == (
        False,
        800,
        "es",
    )
    assert zero.status_code == 422 and missing.status_code == 404 and gone.status_code == 404
    assert no_plugin.status_code == 422 and "nope://" in no_plugin.json()["detail"]
    assert bad_user.status_code == 422 and "invalid username" in bad_user.json()["detail"]


# -- policies ------------------------------------------------------------------------------------

TWO_STAGES = {
    "stages": [
        {"name": "first", "roles": ["hq", "trusted"]},
        {"name": "later", "roles": ["partner"], "delay_s": 900},
    ]
}


def test_policies_list_the_built_in_default_and_store_new_ones(api: ApiHub) -> None:
    name = unique("policy")
    with api.client(ApiRole.ADMIN) as admin:
        builtin = admin.get("/v1/policies/default").json()
        put = admin.put(f"/v1/policies/{name}", json={"document": TWO_STAGES})
        assert put.status_code == 200, put.text
        second = admin.put(f"/v1/policies/{unique('policy')}", json={"document": TWO_STAGES})
        assert second.status_code == 200
        one_by_one = walk(admin, "/v1/policies", 1)
        at_once = walk(admin, "/v1/policies", 50)
        got = admin.get(f"/v1/policies/{name}").json()
    assert [s["name"] for s in builtin["document"]["stages"]] == ["first", "partners", "public"]
    assert one_by_one == at_once
    names = [p["name"] for p in at_once]
    assert names.count("default") == 1 and {name, second.json()["name"]} <= set(names)
    assert len({p["name"] for p in at_once}) == len(at_once)
    later = got["document"]["stages"][1]
    assert later == {
        "name": "later",
        "roles": ["partner"],
        "condition": "immediately",
        "delay_s": 900,
        "reminder_interval_s": None,
    }
    assert got == put.json()


def test_a_stored_default_replaces_the_built_in_one(api: ApiHub) -> None:
    with api.client(ApiRole.ADMIN) as admin:
        before = admin.get("/v1/policies/default").json()
        stored = admin.put("/v1/policies/default", json={"document": TWO_STAGES})
        after = admin.get("/v1/policies/default").json()
        listed = walk(admin, "/v1/policies", 1)
        restored = admin.put("/v1/policies/default", json={"document": before["document"]})
    assert stored.status_code == 200 and after == stored.json()
    assert [p["name"] for p in listed].count("default") == 1
    assert next(p for p in listed if p["name"] == "default") == after
    assert restored.json() == before


def test_policy_errors(api: ApiHub) -> None:
    with api.client(ApiRole.ADMIN) as admin:
        no_stages = admin.put("/v1/policies/broken", json={"document": {"stages": []}})
        bad_role = admin.put(
            "/v1/policies/broken",
            json={"document": {"stages": [{"name": "x", "roles": ["aliens"]}]}},
        )
        bad_name = admin.put("/v1/policies/no%20spaces", json={"document": TWO_STAGES})
        missing = admin.get("/v1/policies/broken")
    with api.client(ApiRole.HQ) as hq:
        not_allowed = hq.put("/v1/policies/hq-made", json={"document": TWO_STAGES})
        readable = hq.get("/v1/policies/default")
    assert no_stages.status_code == 422
    assert no_stages.json()["detail"].startswith("invalid escalation policy: stages")
    assert bad_role.status_code == 422 and "stages.0.roles.0" in bad_role.json()["detail"]
    assert bad_name.status_code == 422
    assert (
        missing.status_code == 404 and missing.json()["detail"] == "no escalation policy 'broken'"
    )
    assert not_allowed.status_code == 403 and readable.status_code == 200


@pytest.mark.parametrize("path", ["/v1/devices", "/v1/contacts", "/v1/responders"])
def test_list_limits_are_checked(api: ApiHub, path: str) -> None:
    with api.client(ApiRole.HQ) as client:
        assert client.get(path, params={"limit": 0}).status_code == 422
        assert client.get(path, params={"limit": 201}).status_code == 422
        assert client.get(path, params={"limit": 1}).status_code == 200


def test_a_seized_wristband_is_suspended_or_revoked_at_once(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client)
        ids = [unique("wb-seized"), unique("wb-lost"), unique("wb-kept")]
        passwords = {}
        for device_id in ids:
            made = client.post("/v1/devices", json={"id": device_id, "defender_id": defender_id})
            passwords[device_id] = made.json()["password"]
        suspended = client.post(f"/v1/devices/{ids[0]}/suspend")
        revoked = client.post(f"/v1/devices/{ids[1]}/revoke")
        unknown = client.post("/v1/devices/no-such-device/suspend")
        kept = client.get(f"/v1/devices/{ids[2]}").json()
    assert suspended.status_code == 200 and suspended.json()["active"] is False
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert unknown.status_code == 404
    assert kept["active"] is True
    wait_until(lambda: not accepts_login(api, ids[0], passwords[ids[0]]))
    assert not accepts_login(api, ids[1], passwords[ids[1]])
    assert accepts_login(api, ids[2], passwords[ids[2]])
