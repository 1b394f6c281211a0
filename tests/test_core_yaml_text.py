"""Hand-written YAML scalars read back as the value written, by PyYAML and by the loader's
own parser (YAML 1.1 traps: `no`, `on`, `1e-05`, `0x100`, NodeIds with `;` and `=`)."""

from __future__ import annotations

import math

import pytest
import yaml

from gateway.config.yaml_marks import parse_yaml
from gateway.core.yaml_text import flow_mapping, scalar

VALUES = [
    "temp", "no", "No", "on", "off", "yes", "y", "n", "true", "null", "~", "", " ", "inf",
    ".inf", ".nan", "nan", "0x100", "1e3", "12", "-4", "3.5", "ns=2;s=Pump.Temperature",
    "a: b", "a #b", "#x", "- x", "[x]", "{x}", "'q'", '"q"', "tab\tthere", "line\nbreak",
    "/dev/ttyACM0", "../pki/own/cert.der", "degC", "°C", "m³/h", "µm", "*star", "&anchor",
    "!tag", "%pct", "@at", "`tick`", "a,b",
    0, 7, -12, 65535, 0.0, 1.5, -2.25, 1e-05, 1e20, 25600.0, 0.1, 1 / 3,
    True, False, None,
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_scalar_reads_back_as_written(value: object) -> None:
    text = f"key: {scalar(value)}\n"
    assert yaml.safe_load(text) == {"key": value}
    parsed = parse_yaml(text, "draft.yaml")
    assert parsed.problems == []
    assert parsed.document is not None and parsed.document.data == {"key": value}


def test_floats_keep_a_dot_that_yaml_1_1_needs() -> None:
    assert scalar(1e-05) == "1.0e-05"
    assert scalar(1e20) == "1.0e+20"
    assert scalar(math.inf) == ".inf" and yaml.safe_load(scalar(-math.inf)) == -math.inf


def test_a_flow_mapping_is_one_list_entry() -> None:
    line = flow_mapping({"name": "speed", "node_id": "ns=2;s=Pump.Speed", "unit": "rpm"})
    assert line == '{name: speed, node_id: "ns=2;s=Pump.Speed", unit: rpm}'
    assert yaml.safe_load(f"- {line}") == [
        {"name": "speed", "node_id": "ns=2;s=Pump.Speed", "unit": "rpm"}
    ]
