"""The SDK against a real hub: every test runs with ``Client`` and with ``AsyncClient``.

Tokens, defenders, devices, contacts, responders and policies, the pagination helpers, and the
error hierarchy as the real server's problems map onto it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pydantic
import pytest

from sdk import (
    APIError,
    AuthenticationError,
    Client,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    Page,
    PermissionDeniedError,
    UnprocessableEntityError,
)
from sdk.errors import FieldError
from sdk.models import ApiRole, Defender, DeviceCredentials, RecipientRole
from tests.support.api import ApiHub
from tests.support.sdk import MODES, Both

_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(params=MODES)
def sdk(api: ApiHub, request: pytest.FixtureRequest) -> Iterator[Both]:
    both = Both(api, request.param)
    yield both
    both.close()


def test_me_names_the_token_and_its_permissions(sdk: Both) -> None:
    me = sdk(lambda c: c.me(), role=ApiRole.READ_ONLY)
    assert (me.name, me.role) == ("test-read_only", ApiRole.READ_ONLY)
    assert "alarms:read" in me.permissions and "operations:write" not in me.permissions


def test_a_token_is_created_listed_and_revoked(sdk: Both) -> None:
    made = sdk(lambda c: c.tokens.create(name=unique("ci"), role="integration"))
    assert made.token.startswith(made.prefix) and made.role == ApiRole.INTEGRATION
    listed = sdk(lambda c: c.tokens.iter(page_size=2))
    assert made.id in [token.id for token in listed]
    with Client(sdk.api.base_url, made.token) as own:
        assert own.me().token_id == made.id
        assert sdk(lambda c: c.tokens.revoke(made.id)).revoked_at is not None
        with pytest.raises(AuthenticationError) as caught:
            own.me()
    assert caught.value.status == 401 and caught.value.code == "unauthenticated"


def test_a_defender_is_created_updated_and_given_codes(sdk: Both) -> None:
    name = unique("Ana")
    made = sdk(lambda c: c.defenders.create(name=name, language="ru", timezone="Europe/Moscow"))
    assert isinstance(made, Defender) and (made.language, made.codes_set) == ("ru", False)
    changed = sdk(lambda c: c.defenders.update(made.id, allow_public_broadcast=True))
    assert changed.allow_public_broadcast and changed.timezone == "Europe/Moscow"
    nothing = sdk(lambda c: c.defenders.set_codes(made.id, cancel_code="1357", duress_code="2468"))
    assert nothing is None
    assert sdk(lambda c: c.defenders.get(made.id)).codes_set is True


def test_list_gives_one_page_and_iter_walks_them_all(sdk: Both) -> None:
    made = [sdk(lambda c: c.defenders.create(name=unique("Page"))).id for _ in range(5)]
    page = sdk(lambda c: c.defenders.list(limit=2))
    assert isinstance(page, Page) and len(page.items) == 2 and page.next_cursor
    following = sdk(lambda c: c.defenders.list(limit=2, cursor=page.next_cursor))
    assert following.items[0].id > page.items[-1].id
    every = [d.id for d in sdk(lambda c: c.defenders.iter(page_size=2))]
    assert set(made) <= set(every)
    assert every == sorted(set(every))


def test_a_device_is_registered_with_its_broker_password(sdk: Both) -> None:
    defender = sdk(lambda c: c.defenders.create(name=unique("Wearer")))
    device_id = unique("wb")
    made = sdk(lambda c: c.devices.create(device_id=device_id, defender_id=defender.id))
    assert isinstance(made, DeviceCredentials) and made.device_id == device_id and made.password
    assert sdk(lambda c: c.devices.get(device_id)).defender_id == defender.id
    mine = sdk(lambda c: c.devices.iter(defender_id=defender.id))
    assert [device.id for device in mine] == [device_id]
    with pytest.raises(ConflictError) as caught:
        sdk(lambda c: c.devices.create(device_id=device_id, defender_id=defender.id))
    assert caught.value.status == 409


def test_contacts_show_channels_masked_and_filter_by_defender_and_role(sdk: Both) -> None:
    defender = sdk(lambda c: c.defenders.create(name=unique("Contactee")))
    url = "mailto://alerts:s3cret@mail.example.org?to=sister@example.org"
    made = sdk(lambda c: c.contacts.create(name="Sister", channel_url=url, defender_id=defender.id))
    assert made.role == RecipientRole.TRUSTED and "s3cret" not in made.channel
    changed = sdk(lambda c: c.contacts.update(made.id, active=False, language="es"))
    assert (changed.active, changed.language) == (False, "es")
    assert sdk(lambda c: c.contacts.get(made.id)).name == "Sister"
    found = sdk(lambda c: c.contacts.list(defender_id=defender.id, role="trusted"))
    assert [contact.id for contact in found.items] == [made.id]
    assert sdk(lambda c: c.contacts.list(defender_id=defender.id, role="press")).items == []


def test_responders_are_created_and_updated(sdk: Both) -> None:
    made = sdk(lambda c: c.responders.create(name=unique("Nearby"), channel_url="console://"))
    assert made.available and made.mqtt_password is None
    changed = sdk(lambda c: c.responders.update(made.id, available=False, radius_m=800))
    assert (changed.available, changed.radius_m) == (False, 800)
    assert made.id in [r.id for r in sdk(lambda c: c.responders.iter())]
    assert sdk(lambda c: c.responders.get(made.id)).available is False


def test_a_policy_is_stored_read_and_listed(sdk: Both) -> None:
    default = sdk(lambda c: c.policies.list()).items[0]
    name = unique("calm")
    stored = sdk(lambda c: c.policies.put(name, default.document))
    assert stored.name == name and stored.document == default.document
    assert sdk(lambda c: c.policies.get(name)).document == default.document
    assert name in [policy.name for policy in sdk(lambda c: c.policies.iter(page_size=1))]
    with pytest.raises(UnprocessableEntityError):
        sdk(lambda c: c.policies.put(unique("broken"), {"stages": "soon"}))


# -- errors ------------------------------------------------------------------------------------


def test_a_wrong_token_is_an_authentication_error(sdk: Both) -> None:
    with pytest.raises(AuthenticationError) as caught:
        sdk(lambda c: c.me(), token="nat_not-a-token")
    error = caught.value
    assert isinstance(error, APIError) and error.status == 401
    assert error.problem is not None and error.problem["type"].endswith("/unauthenticated")


def test_a_role_without_the_permission_is_permission_denied(sdk: Both) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        sdk(lambda c: c.defenders.create(name="Nope"), role=ApiRole.READ_ONLY)
    assert caught.value.code == "forbidden" and "operations:write" in caught.value.detail
    assert "403 forbidden" in str(caught.value) and "/v1/defenders" in str(caught.value)


def test_an_unknown_id_is_not_found(sdk: Both) -> None:
    with pytest.raises(NotFoundError) as caught:
        sdk(lambda c: c.defenders.get(999_999))
    assert caught.value.detail == "no defender 999999" and caught.value.errors == ()


def test_values_the_hub_refuses_are_unprocessable_with_the_reason(sdk: Both) -> None:
    defender = sdk(lambda c: c.defenders.create(name=unique("Traveller")))
    with pytest.raises(UnprocessableEntityError) as caught:
        sdk(lambda c: c.defenders.update(defender.id, timezone="Mars/Olympus"))
    assert caught.value.status == 422 and "Mars/Olympus" in caught.value.detail


def test_field_errors_of_a_422_are_parsed(sdk: Both) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        sdk(lambda c: c._transport.request("POST", "/defenders", json={"name": "", "x": 1}))
    assert {error.loc for error in caught.value.errors} == {("body", "name"), ("body", "x")}
    assert all(isinstance(error, FieldError) and error.msg for error in caught.value.errors)


def test_a_forged_cursor_is_an_invalid_request(sdk: Both) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        sdk(lambda c: c.defenders.list(cursor="forged"))
    assert caught.value.code == "bad_cursor"


def test_invalid_arguments_fail_before_any_request(sdk: Both) -> None:
    before = sdk(lambda c: c.defenders.list(limit=200)).items
    with pytest.raises(pydantic.ValidationError):
        sdk(lambda c: c.defenders.create(name="Ana", language="not a language"))
    with pytest.raises(pydantic.ValidationError):
        sdk(lambda c: c.defenders.set_codes(1, cancel_code="1", duress_code="2"))
    assert sdk(lambda c: c.defenders.list(limit=200)).items == before


def test_a_device_is_suspended_and_revoked(sdk: Both) -> None:
    defender = sdk(lambda c: c.defenders.create(name=unique("Wearer")))
    first, second = unique("wb-stop"), unique("wb-stop")
    sdk(lambda c: c.devices.create(device_id=first, defender_id=defender.id))
    sdk(lambda c: c.devices.create(device_id=second, defender_id=defender.id))
    assert sdk(lambda c: c.devices.suspend(first)).active is False
    assert sdk(lambda c: c.devices.revoke(second)).active is False
    with pytest.raises(NotFoundError):
        sdk(lambda c: c.devices.suspend(unique("nobody")))
