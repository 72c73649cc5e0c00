"""Property-based tests of the API's request bodies: every model deriving ``sdk.models.Input``
validated from any JSON gives a model or a pydantic ``ValidationError``; and a few hostile raw
bodies sent to the real API (deep nesting, NaN, huge numbers, bad UTF-8, a BOM) get a 4xx
problem document, never a 5xx.

tests/test_api_fuzz.py already sends schema-shaped requests to every operation (schemathesis);
this file adds what a schema-driven generator does not send: bodies that are not JSON the
schema describes at all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from hub.api.openapi import PUBLISHED
from sdk import models
from sdk.models import ApiRole
from tests.support.api import ApiHub
from tests.support.hypothesis import dumps, fuzz, hostile_bytes, json_values

INPUTS = sorted(
    (
        value
        for value in vars(models).values()
        if isinstance(value, type) and issubclass(value, models.Input) and value is not models.Input
    ),
    key=lambda model: model.__name__,
)


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def model_shaped(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the model's own field names (by alias) holding any JSON values."""
    names = [field.alias or name for name, field in model.model_fields.items()]
    return st.fixed_dictionaries({}, optional=dict.fromkeys(names, json_values))


def test_every_input_model_is_covered() -> None:
    assert len(INPUTS) >= 20, [model.__name__ for model in INPUTS]


@pytest.mark.parametrize("model", INPUTS, ids=lambda model: model.__name__)
@fuzz(weight=0.5)
@given(data=st.data())
def test_any_json_gives_a_model_or_a_validation_error(
    model: type[BaseModel], data: st.DataObject
) -> None:
    value = data.draw(model_shaped(model) | json_values, label="body")
    for validate in (model.model_validate, lambda v: model.model_validate_json(dumps(v))):
        try:
            validate(value)
        except ValidationError as exc:
            assert exc.errors()


@pytest.mark.parametrize("model", INPUTS, ids=lambda model: model.__name__)
@pytest.mark.parametrize("depth", [100, 400, 900])
def test_deeply_nested_bodies_are_validation_errors(model: type[BaseModel], depth: int) -> None:
    # What FastAPI hands to the model after json.loads: nesting it accepts, up to ~1000 levels.
    field = next(iter(model.model_fields))
    for body in ({field: nested(depth)}, nested(depth)):
        with pytest.raises(ValidationError):
            model.model_validate(body)


# -- through the real API ---------------------------------------------------------------------

BODY_ROUTES = sorted(
    (method.upper(), path)
    for path, operations in json.loads(PUBLISHED.read_text())["paths"].items()
    for method, operation in operations.items()
    if "requestBody" in operation
)
#: Raw bodies no JSON Schema generator sends.
HOSTILE_BODIES = [
    b"[" * 900 + b"]" * 900,
    b'{"name":' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"name":NaN}',
    b'{"name":"x","id":1e999}',
    b'{"name":' + b"9" * 5000 + b"}",
    b'{"name":"\xff\xfe"}',
    b'\xef\xbb\xbf{"name":"x"}',
    b'{"name":"\\ud800"}',
    b'{"name":"a","name":"b"}',
    b"",
    b"null",
]


def call(api: ApiHub, method: str, path: str, body: bytes) -> None:
    url = path.replace("{name}", "p1")
    for param in ("defender_id", "contact_id", "responder_id", "alarm_id", "event_id"):
        url = url.replace("{" + param + "}", "1")
    url = url.replace("{request_id}", "1")
    with api.client(ApiRole.ADMIN) as client:
        response = client.request(
            method, url, content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code < 500, (method, path, body[:80], response.text[:300])
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text
        problem = response.json()
        assert problem["status"] == response.status_code and problem["code"], problem


#: Slow to send and parse: tried on two routes only.
BIG_BODIES = [
    b'{"name":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"name":"' + b"x" * 2_000_000 + b'"}',
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_hostile_raw_bodies_get_a_problem_never_a_server_error(
    api: ApiHub, method: str, path: str
) -> None:
    for body in HOSTILE_BODIES:
        call(api, method, path, body)


@pytest.mark.parametrize("path", ["/v1/defenders", "/v1/devices"])
def test_huge_and_deep_bodies_get_a_problem_never_a_server_error(api: ApiHub, path: str) -> None:
    for body in BIG_BODIES:
        call(api, "POST", path, body)


@fuzz(weight=0.3, stall_s=None)
@given(route=st.sampled_from(BODY_ROUTES), body=hostile_bytes | json_values.map(dumps))
@example(route=("POST", "/v1/defenders"), body=b'{"name":"' + b"\\u0000" + b'"}')
def test_generated_raw_bodies_get_a_problem_never_a_server_error(
    api: ApiHub, route: tuple[str, str], body: bytes
) -> None:
    call(api, *route, body)
