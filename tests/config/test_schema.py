"""The JSON Schema shipped in configs/schema/ matches the models."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config.schema import (
    device_schema,
    gateway_schema,
    json_schema,
    outdated_schema_files,
    render,
    schema_files,
    write_schema,
)

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "schema"


def test_shipped_schema_is_up_to_date() -> None:
    outdated = outdated_schema_files(SHIPPED)
    assert outdated == [], (
        f"configs/schema/ is out of date ({', '.join(outdated)}); regenerate with "
        "`python -m gateway.config.schema configs/schema`"
    )


def test_outdated_files_are_detected(tmp_path: Path) -> None:
    write_schema(tmp_path)
    assert outdated_schema_files(tmp_path) == []
    (tmp_path / "device.schema.json").write_text("{}\n")
    (tmp_path / "old.schema.json").write_text("{}\n")
    (tmp_path / "gateway.schema.json").unlink()
    assert outdated_schema_files(tmp_path) == [
        "device.schema.json",
        "gateway.schema.json",
        "old.schema.json",
    ]


def test_combined_schema_describes_both_files_and_the_protocol_discriminator() -> None:
    schema = json_schema()
    assert schema["anyOf"] == [
        {"$ref": "#/$defs/GatewayConfig"},
        {"$ref": "#/$defs/DeviceConfig"},
    ]
    gateway = schema["$defs"]["GatewayConfig"]
    device = schema["$defs"]["DeviceConfig"]
    assert gateway["required"] == ["site", "gateway_id"]
    assert gateway["additionalProperties"] is False
    assert device["properties"]["connection"]["discriminator"]["propertyName"] == "protocol"
    assert "modbus_tcp" in device["properties"]["connection"]["discriminator"]["mapping"]
    assert "class" in schema["$defs"]["AssetInfo"]["properties"]  # the YAML key, not the alias


def test_every_file_is_valid_json_and_the_combined_one_is_what_the_cli_prints() -> None:
    files = schema_files()
    assert sorted(files) == ["config.schema.json", "device.schema.json", "gateway.schema.json"]
    for text in files.values():
        json.loads(text)
    assert files["config.schema.json"] == json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    assert render(json_schema()) == files["config.schema.json"]


def test_every_field_of_every_file_has_a_description() -> None:
    """The README promises it: an engineer reads the schema in the editor's hover text."""
    undescribed = []
    for name, schema in (("gateway", gateway_schema()), ("device", device_schema())):
        objects = {name: schema, **schema.get("$defs", {})}
        for model, definition in objects.items():
            for field, spec in definition.get("properties", {}).items():
                if not spec.get("description", "").strip():
                    undescribed.append(f"{model}.{field}")
    assert undescribed == []
