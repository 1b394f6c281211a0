"""The command schemas as the contract publishes them (DESIGN.md section 7).

`commands.schema.json`, shipped in the package beside this module, is one JSON Schema document
with the body of every verb of `commands.VERBS` under `$defs/<verb>`, for the AsyncAPI document
and for integrators. A test fails when the file differs from the models; regenerate with
`python -m gateway.ticketing.contract`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.ticketing.commands import command_schemas

SCHEMA_FILE = Path(__file__).with_name("commands.schema.json")


def schema_document() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Edge gateway commands",
        "description": "The JSON body of each command published on `<prefix>/<site>/<gateway>/"
        "cmd/<verb>` (MQTT 5, QoS 1, with a response topic and correlation data); see "
        "docs/TICKETS.md. At most 64 KiB, nesting at most 8 deep, no duplicate keys, finite "
        "numbers only.",
        "$defs": command_schemas(),
    }


def render_schema() -> str:
    return json.dumps(schema_document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
