"""The assembly's pure builders: tags per device, detectors, asset profiles."""

from __future__ import annotations

from pathlib import Path

from detectors import RULES
from gateway.assembly.detectors import build_detectors
from gateway.assembly.plant import ConfiguredDevice, configured_devices
from gateway.assembly.ticketing import asset_profiles
from gateway.config.models import DeviceConfig, device_model
from gateway.core.records import Sample, TagKind
from protocols import PROTOCOLS


def configured(*devices: DeviceConfig) -> list[ConfiguredDevice]:
    return configured_devices([(Path(f"devices/{d.id}.yaml"), d) for d in devices], PROTOCOLS)


def modbus_device() -> DeviceConfig:
    return device_model().model_validate(
        {
            "id": "comp-1",
            "connection": {"protocol": "modbus_tcp", "host": "127.0.0.1"},
            "points": [
                {"name": "temp", "address": 0, "type": "int16", "scale": 0.1, "unit": "degC"},
                {"name": "state", "address": 1, "enum": {0: "stopped", 1: "running"}},
                {"name": "serial", "address": 2, "type": "string", "length": 4},
                {"name": "rate", "address": 10},
                {"name": "accel", "address": 20, "type": "int16", "unit": "g",
                 "waveform": {"samples": 64, "sample_rate_point": "rate"}},
            ],
            "rules": [{"name": "hot", "signal": "temp", "hi": 90}],
        }
    )  # fmt: skip


def test_modbus_tags_carry_kind_and_leave_out_text_points():
    [device] = configured(modbus_device())
    tags = {tag.id: tag for tag in device.tags}
    assert set(tags) == {"comp-1.temp", "comp-1.state", "comp-1.rate", "comp-1.accel"}
    assert tags["comp-1.state"].kind is TagKind.STATE
    assert tags["comp-1.accel"].kind is TagKind.WAVEFORM
    assert tags["comp-1.temp"].kind is TagKind.SCALAR and tags["comp-1.temp"].unit == "degC"


def test_a_threshold_rule_becomes_a_detector_on_its_full_tag_id():
    [detector] = build_detectors(configured(modbus_device()), RULES)
    assert detector.inputs == frozenset({"comp-1.temp"})


def test_a_threshold_ticket_gives_the_unit_of_its_point_in_message_and_readout():
    # The point says degC; the planner must read 93.5 degC, not a bare 93.5.
    device = modbus_device().model_copy(
        update={"rules": [type(modbus_device().rules[0]).model_validate(
            {"name": "hot", "signal": "temp", "hi": 90, "deadband": 2, "on_delay_s": 3,
             "off_delay_s": 5}
        )]}
    )  # fmt: skip
    [detector] = build_detectors(configured(device), RULES)
    findings = [f for ts, v in ((0.0, 93.5), (3.5, 93.5)) for f in
                detector.update(Sample("comp-1.temp", ts, v))]  # fmt: skip
    [raised] = findings
    assert "93.5 degC, above its high limit of 90 degC for 3.5 s" in raised.message
    assert raised.evidence["readout"] == [
        "Reading: comp-1.temp at 93.5 degC, 3.5 degC above its high limit of 90 degC.",
        "Beyond the limit for 3.5 s (the rule asks for 3 s before raising).",
        "Clears at or below 88 degC (limit minus a deadband of 2 degC), held for 5 s.",
    ]


def test_a_rule_on_another_devices_tag_takes_that_tags_unit():
    other = device_model().model_validate(
        {"id": "chiller-1", "connection": {"protocol": "modbus_tcp", "host": "127.0.0.1",
                                           "port": 5021},
         "points": [{"name": "flow", "address": 0}],
         "rules": [{"name": "hot_feed", "signal": "comp-1.temp", "lo": 5}]}
    )  # fmt: skip
    detectors = build_detectors(configured(modbus_device(), other), RULES)
    [finding] = detectors[1].update(Sample("comp-1.temp", 0.0, 4.0))
    assert "4 degC, below its low limit of 5 degC" in finding.message


def test_an_asset_described_by_two_files_takes_each_field_from_the_file_that_sets_it():
    # The PLC file gives the routing, the sensor file the run signal; neither wins wholesale.
    plc = device_model().model_validate(
        {"id": "press-3", "asset": {"class": "press", "area": "hall-2", "skill": "hydraulics"},
         "connection": {"protocol": "modbus_tcp", "host": "127.0.0.1"},
         "points": [{"name": "oil_temp", "address": 0}]}
    )  # fmt: skip
    sensor = device_model().model_validate(
        {"id": "press-3-vib", "asset": {"id": "press-3", "line": "l4", "run_signal": "speed",
                                        "run_above": 5},
         "connection": {"protocol": "modbus_tcp", "host": "127.0.0.1", "port": 5021},
         "points": [{"name": "speed", "address": 0}]}
    )  # fmt: skip
    for devices in ([plc, sensor], [sensor, plc]):
        profile = asset_profiles(configured(*devices))["press-3"]
        assert (profile.asset_class, profile.area, profile.line, profile.skill) == (
            "press", "hall-2", "l4", "hydraulics",
        )  # fmt: skip
        assert (profile.run_tag, profile.run_above) == ("press-3-vib.speed", 5.0)
        assert set(profile.tags) == {"press-3.oil_temp", "press-3-vib.speed"}
