"""The composition root's pure builders: tags per device, stagger, detectors."""

from __future__ import annotations

from gateway.app import asset_profiles, build_detectors, device_tags
from gateway.config.models import DeviceConfig
from gateway.core.records import TagKind


def modbus_device() -> DeviceConfig:
    return DeviceConfig.model_validate(
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
    tags = {tag.id: tag for tag in device_tags(modbus_device())}
    assert set(tags) == {"comp-1.temp", "comp-1.state", "comp-1.rate", "comp-1.accel"}
    assert tags["comp-1.state"].kind is TagKind.STATE
    assert tags["comp-1.accel"].kind is TagKind.WAVEFORM
    assert tags["comp-1.temp"].kind is TagKind.SCALAR and tags["comp-1.temp"].unit == "degC"


def test_a_threshold_rule_becomes_a_detector_on_its_full_tag_id():
    [detector] = build_detectors([modbus_device()])
    assert detector.inputs == frozenset({"comp-1.temp"})


def test_an_asset_described_by_two_files_takes_each_field_from_the_file_that_sets_it():
    # The PLC file gives the routing, the sensor file the run signal; neither wins wholesale.
    plc = DeviceConfig.model_validate(
        {"id": "press-3", "asset": {"class": "press", "area": "hall-2", "skill": "hydraulics"},
         "connection": {"protocol": "modbus_tcp", "host": "127.0.0.1"},
         "points": [{"name": "oil_temp", "address": 0}]}
    )  # fmt: skip
    sensor = DeviceConfig.model_validate(
        {"id": "press-3-vib", "asset": {"id": "press-3", "line": "l4", "run_signal": "speed",
                                        "run_above": 5},
         "connection": {"protocol": "modbus_tcp", "host": "127.0.0.1", "port": 5021},
         "points": [{"name": "speed", "address": 0}]}
    )  # fmt: skip
    for devices in ([plc, sensor], [sensor, plc]):
        profile = asset_profiles(devices)["press-3"]
        assert (profile.asset_class, profile.area, profile.line, profile.skill) == (
            "press", "hall-2", "l4", "hydraulics",
        )  # fmt: skip
        assert (profile.run_tag, profile.run_above) == ("press-3-vib.speed", 5.0)
        assert set(profile.tags) == {"press-3.oil_temp", "press-3-vib.speed"}
