"""The rule seam: a rule kind defined in the tests alone (`tests/plugins/step.py`) and entered
in an extended copy of the rule table is validated, checked and built into a detector through
the same assembly as the shipped kinds; an unknown kind is a configuration error naming the
known ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detectors import RULES
from gateway.assembly.detectors import build_detectors
from gateway.assembly.plant import configured_devices
from gateway.config.loader import load_config
from gateway.core.errors import ConfigError
from gateway.core.records import Sample

WITH_STEP = RULES.with_entries({"step": "tests.plugins.step:STEP"})


def write_site(folder: Path, rule: dict[str, object]) -> Path:
    (folder / "devices").mkdir(parents=True)
    (folder / "gateway.yaml").write_text(yaml.safe_dump({"site": "s", "gateway_id": "g"}))
    device = {
        "id": "tank-1",
        "connection": {"protocol": "modbus_tcp", "host": "127.0.0.1"},
        "points": [{"name": "level", "address": 0}],
        "rules": [rule],
    }
    (folder / "devices" / "tank-1.yaml").write_text(yaml.safe_dump(device))
    return folder / "gateway.yaml"


STEP_RULE = {"name": "jump", "kind": "step", "signal": "level", "max_step": 5}


def test_an_unknown_rule_kind_is_an_error_naming_the_known_kinds(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        load_config(write_site(tmp_path, STEP_RULE))
    [problem] = caught.value.problems
    assert problem.path == "rules.0.kind"
    assert RULES.names and all(kind in problem.message for kind in RULES.names)


def test_the_extended_table_builds_the_new_kind_into_a_working_detector(tmp_path: Path):
    loaded = load_config(write_site(tmp_path, STEP_RULE), rules=WITH_STEP)
    devices = configured_devices(loaded.devices, loaded.protocols)
    [detector] = build_detectors(devices, loaded.rules)
    assert detector.asset == "tank-1" and detector.inputs == frozenset({"tank-1.level"})
    assert detector.update(Sample("tank-1.level", 1.0, 10.0)) == []
    [finding] = detector.update(Sample("tank-1.level", 2.0, 20.0))
    assert finding.detector == "tank-1.jump"


def test_the_new_kinds_own_check_reports_at_its_line(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        load_config(write_site(tmp_path, {**STEP_RULE, "max_step": 0}), rules=WITH_STEP)
    [problem] = caught.value.problems
    assert (problem.path, problem.message) == ("rules.0.max_step", "max_step must be positive")
    assert problem.line is not None
