"""Security headers on every answer of a real hub's web server, and API docs that load nothing
from outside the hub."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from sdk.models import ApiRole
from tests.support.api import ApiHub

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class _References(HTMLParser):
    """Every URL the page makes a browser load (src, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        (None, "/healthz", 200),
        (None, "/v1/me", 401),
        (ApiRole.HQ, "/v1/me", 200),
        (ApiRole.INTEGRATION, "/v1/defenders", 403),
        (None, "/v1/openapi.json", 200),
        (None, "/ack/not-a-token", 404),
        (None, "/v1/docs", 200),
        (None, "/v1/nowhere", 404),
    ],
)
def test_every_answer_carries_the_security_headers(
    api: ApiHub, role: ApiRole | None, path: str, status: int
) -> None:
    with api.client(role) as client:
        response = client.get(path)
    assert response.status_code in (status, 503)  # /healthz may say "not ready" (503)
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (path, name)
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy


def test_the_live_stream_carries_them_too(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client, client.stream("GET", "/v1/alarm-events/stream") as r:
        assert r.status_code == 200
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_the_docs_page_loads_everything_from_the_hub_and_runs_no_inline_script(
    api: ApiHub,
) -> None:
    with api.client(None) as client:
        page = client.get("/v1/docs")
        references = _References()
        references.feed(page.text)
        assets = {url: client.get(url) for url in references.urls}
    assert page.status_code == 200 and references.urls
    assert all(url.startswith("/") and not url.startswith("//") for url in references.urls)
    assert not re.search(r"https?://", page.text)
    assert not re.search(r"<script>", page.text), "an inline script would need a looser policy"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-eval" not in policy
    for url, answer in assets.items():
        assert answer.status_code == 200, url
        assert answer.headers["x-content-type-options"] == "nosniff"
    bundle = next(answer for url, answer in assets.items() if url.endswith("bundle.js"))
    assert "SwaggerUIBundle" in bundle.text
    start = next(answer for url, answer in assets.items() if url.endswith("start.js"))
    assert not re.search(r"https?://", start.text)
