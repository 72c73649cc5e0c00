"""Property-based tests of the real API against its own published OpenAPI document.

Schemathesis generates requests from ``hub/api/openapi.json`` (valid and invalid bodies, query
strings and path values) and sends them to a real hub with an admin token: no request may get a
5xx, and every error must be a problem document. Raise the number of cases per operation with
``NATALIA_FUZZ_EXAMPLES`` (e.g. 2000 for a long run).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from hub.api.openapi import PUBLISHED
from sdk.models import ApiRole
from tests.support.api import ApiHub

EXAMPLES = int(os.environ.get("NATALIA_FUZZ_EXAMPLES", "25"))

schema = (
    schemathesis.openapi.from_path(str(PUBLISHED))
    .exclude(
        # Revoking random token ids would revoke the fuzzer's own token; tests/test_api_basics.py
        # and tests/test_api_roles.py cover revocation.
        method="DELETE",
        path="/v1/tokens/{token_id}",
    )
    .exclude(
        # An endless event stream: tests/test_api_stream.py covers it.
        path="/v1/alarm-events/stream",
    )
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("NATALIA_FUZZ_RANDOM") is None,
)
def test_no_generated_request_gets_a_server_error(case: Any, api: ApiHub) -> None:
    # The generated Authorization header (if any) is replaced by the admin token's.
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {api.tokens[ApiRole.ADMIN]}"}
    response = case.call(base_url=api.base_url, timeout=30)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    assert response.status_code != 401, (case.method, case.path)
    if response.status_code >= 400:
        assert response.headers["content-type"] == ["application/problem+json"], response.text
        body = response.json()
        assert body["status"] == response.status_code and body["code"], body
