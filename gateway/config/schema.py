"""JSON Schema of the configuration, exported from the pydantic models (DESIGN.md section 4).

Shipped in `configs/schema/` as three files, so that editors complete and check YAML as it is
typed:

- `gateway.schema.json` for `gateway.yaml` and `device.schema.json` for `devices/*.yaml`:
  one schema per kind of file, which is what YAML editor plugins map to file patterns
  (or a `# yaml-language-server: $schema=../schema/device.schema.json` first line);
- `config.schema.json`: both in one document (`$defs` shared, `anyOf` gateway or device
  file), which is what `edge-gateway schema` prints.

A test regenerates them and fails when the shipped copies are out of date; regenerate with
`python -m gateway.config.schema configs/schema`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.config.models import GatewayConfig, device_model

DRAFT = "https://json-schema.org/draft/2020-12/schema"
GATEWAY_SCHEMA_FILE = "gateway.schema.json"
DEVICE_SCHEMA_FILE = "device.schema.json"
COMBINED_SCHEMA_FILE = "config.schema.json"


def json_schema() -> dict[str, Any]:
    """Both files' schemas in one document: a file is valid if it is a gateway or a device file."""
    refs, definitions = models_json_schema(
        [(GatewayConfig, "validation"), (device_model(), "validation")]
    )
    return {
        "$schema": DRAFT,
        "$id": COMBINED_SCHEMA_FILE,
        "title": "edge-gateway configuration",
        "description": "gateway.yaml (site, storage, uplink, ticketing) or a devices/*.yaml file.",
        "anyOf": [refs[(GatewayConfig, "validation")], refs[(device_model(), "validation")]],
        **definitions,
    }


def gateway_schema() -> dict[str, Any]:
    """Schema of `gateway.yaml`."""
    return _file_schema(GatewayConfig, GATEWAY_SCHEMA_FILE)


def device_schema() -> dict[str, Any]:
    """Schema of one `devices/*.yaml` file."""
    return _file_schema(device_model(), DEVICE_SCHEMA_FILE)


def schema_files() -> dict[str, str]:
    """File name -> exact text of every file shipped in `configs/schema/`."""
    return {
        GATEWAY_SCHEMA_FILE: render(gateway_schema()),
        DEVICE_SCHEMA_FILE: render(device_schema()),
        COMBINED_SCHEMA_FILE: render(json_schema()),
    }


def render(schema: dict[str, Any]) -> str:
    """The text written to disk; the same as `edge-gateway schema` prints."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schema(directory: str | Path) -> list[Path]:
    """Write every schema file into `directory` (created if needed); return the paths."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_files().items():
        path = target / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def outdated_schema_files(directory: str | Path) -> list[str]:
    """Names in `directory` that are missing, differ from the models, or are no longer made."""
    target = Path(directory)
    expected = schema_files()
    outdated = [
        name
        for name, text in expected.items()
        if not (target / name).is_file() or (target / name).read_text(encoding="utf-8") != text
    ]
    stale = [p.name for p in target.glob("*.json") if p.name not in expected]
    return sorted(outdated + stale)


def _file_schema(model: type[BaseModel], file_name: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    return {"$schema": DRAFT, "$id": file_name, **schema}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m gateway.config.schema DIRECTORY  (usually configs/schema)")
    for written_path in write_schema(sys.argv[1]):
        print(f"wrote {written_path}")
