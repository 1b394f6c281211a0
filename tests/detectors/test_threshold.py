"""Threshold detector: tables of (time, value) in, findings out."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detectors.threshold import ThresholdDetector, limit_problems
from gateway.core.records import FaultCode, Priority, Quality, Sample, Waveform

TAG = "pump-1.bearing_temp"
BAD = None  # a BAD sample in a table

HIGH = FaultCode.THRESHOLD_HIGH
LOW = FaultCode.THRESHOLD_LOW
P1, P2 = Priority.P1, Priority.P2


def make(**overrides: Any) -> ThresholdDetector:
    params: dict[str, Any] = {
        "hi": 80.0,
        "deadband": 0.0,
        "on_delay_s": 0.0,
        "off_delay_s": 0.0,
        "priority": P2,
        "priority_hihi": P1,
        "message": "",
        "detector_id": "threshold:bearing_hot",
    }
    params.update(overrides)
    return ThresholdDetector("pump-1.bearing_hot", "pump-1", TAG, **params)


def run(detector: ThresholdDetector, table: list[tuple[float, float | None]]):
    """Feed the table; return (ts, active, fault, severity) for every finding."""
    out = []
    for ts, value in table:
        sample = Sample.bad(TAG, ts, "timeout") if value is BAD else Sample(TAG, ts, value)
        for f in detector.update(sample):
            out.append((ts, f.active, f.fault_code, f.severity))
    return out


CASES = {
    "raises on crossing and clears on return, no delays": (
        {},
        [(0, 70), (1, 80), (2, 80.5), (3, 85), (4, 80), (5, 70)],
        [(2, True, HIGH, P2), (4, False, HIGH, P2)],
    ),
    "deadband stops chatter around the limit": (
        {"deadband": 2.0},
        [(0, 79), (1, 81), (2, 79.5), (3, 80.5), (4, 78.5), (5, 81), (6, 78.1), (7, 78.0)],
        [(1, True, HIGH, P2), (7, False, HIGH, P2)],
    ),
    "without deadband the same signal chatters": (
        {"deadband": 0.0},
        [(0, 79), (1, 81), (2, 79.5), (3, 80.5)],
        [(1, True, HIGH, P2), (2, False, HIGH, P2), (3, True, HIGH, P2)],
    ),
    "on-delay raises only after the limit held for the delay": (
        {"on_delay_s": 5.0},
        [(0, 81), (2, 82), (4.9, 83), (5, 84), (6, 85)],
        [(5, True, HIGH, P2)],
    ),
    "on-delay cancelled by a return inside the limit": (
        {"on_delay_s": 5.0},
        [(0, 81), (3, 81), (4, 79), (5, 81), (9, 81), (10, 81)],
        [(10, True, HIGH, P2)],
    ),
    "off-delay clears only after the value stayed back for the delay": (
        {"off_delay_s": 5.0, "deadband": 2.0},
        [(0, 85), (10, 77), (14, 76), (15, 75)],
        [(0, True, HIGH, P2), (15, False, HIGH, P2)],
    ),
    "off-delay cancelled by a re-exceed": (
        {"off_delay_s": 5.0, "deadband": 2.0},
        [(0, 85), (10, 77), (12, 81), (13, 77), (17, 77), (18, 77)],
        [(0, True, HIGH, P2), (18, False, HIGH, P2)],
    ),
    "off-delay cancelled by a return into the deadband": (
        {"off_delay_s": 5.0, "deadband": 2.0},
        [(0, 85), (10, 77), (12, 79), (13, 77), (17.5, 77), (18, 77)],
        [(0, True, HIGH, P2), (18, False, HIGH, P2)],
    ),
    "escalates to hihi while hi is active, clears once at the hihi priority": (
        {"hihi": 90.0},
        [(0, 85), (1, 95), (2, 85), (3, 96), (4, 70)],
        [(0, True, HIGH, P2), (1, True, HIGH, P1), (4, False, HIGH, P1)],
    ),
    "a jump straight past hihi raises once at the hihi priority": (
        {"hihi": 90.0},
        [(0, 70), (1, 95), (2, 70)],
        [(1, True, HIGH, P1), (2, False, HIGH, P1)],
    ),
    "escalation waits for the on-delay too": (
        {"hihi": 90.0, "on_delay_s": 2.0},
        [(0, 85), (2, 85), (3, 95), (4, 95), (5, 95)],
        [(2, True, HIGH, P2), (5, True, HIGH, P1)],
    ),
    "low side: lo, lolo, deadband": (
        {"hi": None, "lo": 10.0, "lolo": 5.0, "deadband": 1.0},
        [(0, 12), (1, 9), (2, 4), (3, 10.5), (4, 11)],
        [(1, True, LOW, P2), (2, True, LOW, P1), (4, False, LOW, P1)],
    ),
    "high and low sides are independent conditions": (
        {"hi": 80.0, "lo": 10.0},
        [(0, 50), (1, 85), (2, 5), (3, 50)],
        [(1, True, HIGH, P2), (2, False, HIGH, P2), (2, True, LOW, P2), (3, False, LOW, P2)],
    ),
    "BAD samples neither raise, clear nor interrupt a delay": (
        {"on_delay_s": 5.0, "off_delay_s": 5.0},
        [(0, 81), (2, BAD), (5, 81), (6, BAD), (10, 70), (12, BAD), (15, 70)],
        [(5, True, HIGH, P2), (15, False, HIGH, P2)],
    ),
    "only hihi configured: it is both the raise and the clear limit": (
        {"hi": None, "hihi": 90.0, "deadband": 1.0},
        [(0, 91), (1, 89.5), (2, 89)],
        [(0, True, HIGH, P1), (2, False, HIGH, P1)],
    ),
}


@pytest.mark.parametrize(("params", "table", "expected"), CASES.values(), ids=CASES.keys())
def test_threshold_table(params, table, expected):
    assert run(make(**params), table) == expected


def test_nan_and_uncertain_samples():
    detector = make()
    assert detector.update(Sample(TAG, 0, float("nan"))) == []
    uncertain = detector.update(Sample(TAG, 1, 85.0, quality=Quality.UNCERTAIN))
    assert [f.active for f in uncertain] == [True]


def test_ignores_other_tags_and_waveforms():
    detector = make()
    assert detector.update(Sample("pump-1.other", 0, 500.0)) == []
    block = Waveform(TAG, 0, 1000.0, np.full(16, 500.0))
    assert detector.update(block) == []
    assert detector.inputs == frozenset({TAG})
    assert detector.name == "pump-1.bearing_hot"


def test_active_finding_names_signal_value_unit_limit_and_advice():
    detector = make(on_delay_s=10.0, unit="°C", message="Check the lubrication")
    detector.update(Sample(TAG, 0, 84.0))
    (finding,) = detector.update(Sample(TAG, 10, 92.5))
    assert finding.active and finding.asset == "pump-1"
    assert finding.detector == "threshold:bearing_hot"
    assert finding.signal == TAG and finding.value == 92.5
    assert finding.message == (
        "pump-1.bearing_temp is 92.5 °C, above its high limit of 80 °C for 10 s."
        " Check the lubrication."
    )
    assert finding.score == pytest.approx(12.5)
    assert finding.features == {"value": 92.5, "limit": 80.0, "exceedance": 12.5}
    assert finding.evidence["level"] == "high" and finding.evidence["unit"] == "°C"


def test_cleared_finding_says_where_the_value_is_back_to():
    detector = make(deadband=2.0, unit="°C")
    detector.update(Sample(TAG, 0, 85.0))
    (cleared,) = detector.update(Sample(TAG, 1, 77.25))
    assert not cleared.active and cleared.value == 77.25
    assert cleared.message == (
        "pump-1.bearing_temp is back to 77.25 °C, at or below 78 °C (high limit 80 minus"
        " deadband); the high condition has cleared."
    )


def test_escalation_message_and_severity():
    detector = make(hihi=90.0)
    detector.update(Sample(TAG, 0, 85.0))
    (worse,) = detector.update(Sample(TAG, 1, 95.0))
    assert worse.severity is P1 and worse.active
    assert worse.message.startswith("Worsened: pump-1.bearing_temp is 95, above its high-high")


def test_detector_id_defaults_to_name():
    detector = ThresholdDetector("rule-a", "asset", TAG, hi=1.0)
    (finding,) = detector.update(Sample(TAG, 0, 2.0))
    assert finding.detector == "rule-a"


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({}, "at least one of hihi, hi, lo, lolo is required"),
        ({"hi": 80.0, "hihi": 80.0}, "hi (80) must be below hihi (80)"),
        ({"lo": 10.0, "hi": 5.0}, "lo (10) must be below hi (5)"),
        ({"lolo": 6.0, "lo": 5.0}, "lolo (6) must be below lo (5)"),
        ({"hi": float("inf")}, "hi must be a finite number"),
    ],
)
def test_invalid_limits_are_refused(limits, problem):
    full = {"hihi": None, "hi": None, "lo": None, "lolo": None} | limits
    assert problem in limit_problems(**full)
    with pytest.raises(ValueError, match="threshold rule `r`"):
        ThresholdDetector("r", "a", TAG, **limits)


def test_valid_limits_have_no_problems():
    assert limit_problems(hihi=90.0, hi=80.0, lo=10.0, lolo=5.0) == []
