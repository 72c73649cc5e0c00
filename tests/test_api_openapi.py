"""The OpenAPI document published in the repository is the one the hub serves."""

from __future__ import annotations

import json

from hub.api import openapi
from sdk.models import ApiRole
from tests.support.api import ApiHub


def test_the_published_document_is_up_to_date() -> None:
    assert openapi.PUBLISHED.read_text() == openapi.render(), (
        "hub/api/openapi.json is stale: run `.venv/bin/python -m hub.api.openapi`"
    )


def test_the_running_hub_serves_the_published_document(api: ApiHub) -> None:
    with api.client(ApiRole.READ_ONLY) as client:
        served = client.get("/v1/openapi.json").json()
    assert served == json.loads(openapi.PUBLISHED.read_text())


def test_every_operation_documents_the_problem_shape_and_needs_a_token() -> None:
    document = json.loads(openapi.PUBLISHED.read_text())
    assert "Problem" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("security"), f"{where} declares no token"
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert {"401", "403"} <= set(errors), where
            for response in errors.values():
                [(media_type, content)] = response["content"].items()
                assert media_type == "application/problem+json", where
                assert content["schema"]["$ref"].endswith("/Problem"), where
