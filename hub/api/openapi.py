"""The API's OpenAPI document, published in the repository as ``hub/api/openapi.json``.

Regenerate it after changing a route or a wire model (a test fails while it is stale)::

    .venv/bin/python -m hub.api.openapi
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PUBLISHED = Path(__file__).with_name("openapi.json")


def document() -> dict[str, Any]:
    from hub.api.app import create_api

    return create_api(None).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    PUBLISHED.write_text(render())
    print(f"wrote {PUBLISHED}")


if __name__ == "__main__":
    main()
