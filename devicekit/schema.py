"""JSON Schema of every protocol message, for device makers who do not use Python.

``python -m devicekit.schema DIR`` (or ``natalia device schema DIR``) writes one file per channel;
the copies shipped in ``devicekit/schemas/`` are checked against the models by the test suite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from devicekit.protocol import CHANNEL_MODELS

SCHEMA_DIR = Path(__file__).with_name("schemas")


def json_schemas() -> dict[str, dict[str, Any]]:
    """Channel name -> JSON Schema (draft 2020-12) of the message sent on it."""
    schemas = {}
    for channel, model in CHANNEL_MODELS.items():
        schema = model.model_json_schema()
        # "v" and "type" have Python defaults for convenience, but every message on the wire
        # must carry both.
        schema["required"] = [
            "v",
            "type",
            *[k for k in schema.get("required", []) if k not in ("v", "type")],
        ]
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://natalia.invalid/protocol/v1/{channel}.json"
        schemas[channel] = schema
    return schemas


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write ``{channel}.json`` files into ``directory`` and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for channel, schema in json_schemas().items():
        path = directory / f"{channel}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(written_path)
