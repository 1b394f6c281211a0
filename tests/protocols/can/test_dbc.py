"""DBC loading, signal binding and frame decoding: plain values in, plain values out."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.errors import BadResponse, ConfigError
from protocols.can.config import CanConnection, CanSignal
from protocols.can.dbc import (
    MessagePlan,
    known_frames,
    load_dbc,
    plan_messages,
    plausibility,
    signal_units,
)
from simulator.can_bus import DEMO_DBC

BROKEN_DBC = """VERSION ""

NS_ :

BS_:

BU_: A

BO_ 256 Foo: 8 A
 SG_ Bar : 0|8@1+ (1,0) [0|255 "rpm" A
"""


def _signal(name: str, message: str | int, signal: str, **extra: object) -> CanSignal:
    return CanSignal.model_validate({"name": name, "message": message, "signal": signal, **extra})


def _plan(*signals: CanSignal) -> dict[tuple[int, bool], MessagePlan]:
    return plan_messages(load_dbc(DEMO_DBC), signals, device_id="m")


def test_dbc_that_does_not_parse_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.dbc"
    path.write_text(BROKEN_DBC)
    with pytest.raises(ConfigError) as caught:
        load_dbc(path)
    [problem] = caught.value.problems
    assert problem.file == str(path)
    assert problem.line == 10
    assert "DBC file does not parse" in problem.message
    assert str(problem).startswith(f"{path}:10: ")


def test_missing_dbc_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read DBC file"):
        load_dbc(tmp_path / "absent.dbc")


def test_every_unknown_message_and_signal_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        plan_messages(
            load_dbc(DEMO_DBC),
            [
                _signal("speed", "MotorData", "SpeedRpm"),
                _signal("x", "NoSuchMessage", "SpeedRpm"),
                _signal("y", "MotorData", "NoSuchSignal"),
                _signal("z", 0x7FF, "Anything"),
            ],
            device_id="m",
            config_file="devices/motor.yaml",
        )
    assert [(p.file, p.path) for p in caught.value.problems] == [
        ("devices/motor.yaml", "signals[1].message"),
        ("devices/motor.yaml", "signals[2].signal"),
        ("devices/motor.yaml", "signals[3].message"),
    ]
    assert "0x7ff" in caught.value.problems[2].message


def test_units_come_from_the_dbc_unless_overridden() -> None:
    units = signal_units(
        DEMO_DBC,
        [
            _signal("speed", "MotorData", "SpeedRpm"),
            _signal("winding", "MotorData", "WindingTemp", unit="°C"),
            _signal("state", "MotorStatus", "State"),
        ],
        device_id="m",
    )
    assert units == {"m.speed": "rpm", "m.winding": "°C", "m.state": ""}


def test_message_found_by_name_or_frame_id_standard_and_extended() -> None:
    plans = _plan(
        _signal("speed", 0x100, "SpeedRpm"),
        _signal("de", "0x18FF1001", "BearingTempDE"),
    )
    assert set(plans) == {(0x100, False), (0x18FF1001, True)}
    assert known_frames(load_dbc(DEMO_DBC)) == {
        (0x100, False),
        (0x200, False),
        (0x18FF1001, True),
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # SpeedRpm 0.5 rpm/bit, CurrentA signed 0.1 A/bit, WindingTemp offset -40 degC
        (bytes([0xC5, 0x0B, 0x85, 0xFF, 0x69, 0, 0, 0]), {"SpeedRpm": 1506.5, "CurrentA": -12.3,
                                                           "WindingTemp": 65.0}),
        (bytes(8), {"SpeedRpm": 0.0, "CurrentA": 0.0, "WindingTemp": -40.0}),
    ],
)
def test_scaling_and_offset_from_the_dbc(data: bytes, expected: dict[str, float]) -> None:
    [plan] = _plan(
        _signal("speed", "MotorData", "SpeedRpm"),
        _signal("current", "MotorData", "CurrentA"),
        _signal("winding", "MotorData", "WindingTemp"),
    ).values()
    values = {v.binding.signal: v.value for v in plan.decode(data)}
    assert values == pytest.approx(expected)


def test_multiplexed_frame_yields_only_the_signals_of_its_page() -> None:
    [plan] = _plan(
        _signal("state", "MotorStatus", "State"),
        _signal("hours", "MotorStatus", "OperatingHours"),
    ).values()
    page0 = bytes([0, 2, 0, 0, 0, 0, 0, 0])
    page1 = bytes([1]) + (123456).to_bytes(4, "little") + bytes(3)
    assert [(v.binding.tag_id, v.value) for v in plan.decode(page0)] == [("m.state", 2.0)]
    assert [(v.binding.tag_id, v.value) for v in plan.decode(page1)] == [
        ("m.hours", pytest.approx(12345.6))
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes(3), "3 data bytes, DBC expects 8 for `MotorStatus`"),
        (bytes(12), "12 data bytes, DBC expects 8"),
        (bytes([7, 0, 0, 0, 0, 0, 0, 0]), "multiplexer id 0 or 1, but got 7"),
    ],
)
def test_untrustworthy_frames_raise_bad_response(data: bytes, reason: str) -> None:
    [plan] = _plan(_signal("state", "MotorStatus", "State")).values()
    with pytest.raises(BadResponse, match=reason):
        plan.decode(data)


def test_stale_after_uses_config_cycle_else_dbc_cycle_times_pages() -> None:
    plans = _plan(
        _signal("speed", "MotorData", "SpeedRpm"),  # DBC 100 ms x 3
        _signal("current", "MotorData", "CurrentA", cycle_ms=40, stale_after_cycles=5),
        _signal("state", "MotorStatus", "State"),  # DBC 250 ms, 2 pages round-robin, x 3
    )
    stale = {b.tag_id: b.stale_after_s for p in plans.values() for b in p.bindings}
    assert stale == pytest.approx({"m.speed": 0.3, "m.current": 0.2, "m.state": 1.5})


def test_plausibility_flags_out_of_range_and_non_finite_values() -> None:
    [plan] = _plan(_signal("state", "MotorStatus", "State")).values()
    [binding] = plan.bindings
    assert plausibility(binding, 2.0) is None
    assert plausibility(binding, 255.0) == "255 outside DBC range [0, 3]"
    assert plausibility(binding, float("nan")) == "not a finite number (nan)"


def test_connection_and_signal_models_reject_unknown_keys_and_bad_ids() -> None:
    with pytest.raises(ValueError, match="extra"):
        CanConnection.model_validate(
            {"protocol": "can", "interface": "virtual", "channel": "c", "dbc": "x.dbc", "x": 1}
        )
    with pytest.raises(ValueError, match="outside"):
        _signal("speed", 0x2000_0000, "SpeedRpm")
