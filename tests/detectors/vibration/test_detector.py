"""`VibrationDetector` on Waveform blocks: confirmation, clearing, evidence, persistence."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from detectors.vibration import BearingCatalogue, VibrationDetector
from gateway.core.interfaces import Detector
from gateway.core.records import FaultCode, Finding, Priority, Quality, Sample, Waveform

from .signals import bearing_fault

FS = 25600.0
BLOCK = 16384
SHAFT = 29.95


def blocks(kind: str, count: int, seed: int) -> list[np.ndarray]:
    if kind == "healthy":
        rng = np.random.default_rng(seed)
        x = 0.1 * rng.standard_normal(BLOCK * count)
    else:
        x = bearing_fault(
            kind, multiplier=3.5848, fs=FS, seconds=BLOCK * count / FS, shaft_hz=SHAFT, seed=seed
        )
    return [x[i * BLOCK : (i + 1) * BLOCK] for i in range(count)]


def detector(**kw: Any) -> VibrationDetector:
    args: dict[str, Any] = {
        "asset": "pump-1",
        "tag_id": "pump-1.de_accel",
        "geometry": BearingCatalogue.load().get("6205"),
        "rpm_tag": "pump-1.speed",
        "confirm_blocks": 3,
        "baseline_blocks": 3,
    }
    args.update(kw)
    return VibrationDetector(**args)


def feed(det: VibrationDetector, data: list[np.ndarray], t0: float = 0.0) -> list[list[Finding]]:
    return [
        det.update(Waveform("pump-1.de_accel", t0 + i, FS, b, unit="g")) for i, b in enumerate(data)
    ]


def test_satisfies_the_detector_protocol() -> None:
    det: Detector = detector()
    assert det.name == "vibration"
    assert det.inputs == frozenset({"pump-1.de_accel", "pump-1.speed"})


def test_outer_race_fault_needs_three_blocks_then_clears_after_three() -> None:
    det = detector()
    det.update(Sample("pump-1.speed", 0.0, SHAFT * 60))
    healthy = feed(det, blocks("healthy", 3, seed=1))
    assert healthy == [[], [], []]
    assert det.baseline.learned
    faulty = feed(det, blocks("outer", 4, seed=2), t0=10)
    assert faulty[0] == [] and faulty[1] == []
    raised = [f for f in faulty[2] if f.fault_code == FaultCode.BEARING_OUTER_RACE]
    assert len(raised) == 1 and faulty[3] == []
    finding = raised[0]
    assert finding.active and finding.asset == "pump-1" and finding.ts == 12
    assert finding.severity is Priority.P2
    assert "BPFO" in finding.message and "`pump-1`" in finding.message
    assert finding.features["baseline_deviation"] > 3
    ev = finding.evidence
    assert ev["matched"]["defect_line"] == "BPFO"
    assert ev["defect_frequencies"]["bpfo_hz"] == pytest.approx(3.5848 * SHAFT, rel=1e-3)
    assert ev["top_peaks"] and all(set(p) == {"freq_hz", "level_db"} for p in ev["top_peaks"])
    # Evidence is a small JSON summary, never the waveform.
    assert len(json.dumps(ev)) < 6000
    cleared = feed(det, blocks("healthy", 3, seed=3), t0=20)
    assert cleared[0] == [] and cleared[1] == []
    assert [(f.fault_code, f.active) for f in cleared[2]] == [("bearing.outer_race", False)]


def test_one_faulty_block_among_healthy_ones_raises_nothing() -> None:
    det = detector(fixed_rpm=SHAFT * 60, rpm_tag=None)
    data = blocks("healthy", 2, 4) + blocks("outer", 1, 5) + blocks("healthy", 3, 6)
    assert all(out == [] for out in feed(det, data))


def test_running_speed_on_the_waveform_wins_over_fixed_rpm() -> None:
    det = detector(fixed_rpm=600.0, rpm_tag=None, confirm_blocks=1)
    b = blocks("outer", 1, 7)[0]
    out = det.update(Waveform("pump-1.de_accel", 0.0, FS, b, running_speed_hz=SHAFT))
    assert [f.fault_code for f in out] == ["bearing.outer_race"]
    assert det.last_diagnosis is not None and det.last_diagnosis.speed_source == "waveform"


def test_bad_blocks_and_other_tags_are_ignored() -> None:
    det = detector(fixed_rpm=SHAFT * 60, confirm_blocks=1)
    b = blocks("outer", 1, 8)[0].copy()
    assert det.update(Waveform("other.tag", 0.0, FS, b)) == []
    assert det.update(Waveform("pump-1.de_accel", 0.0, FS, b, quality=Quality.BAD)) == []
    b[10] = np.nan
    assert det.update(Waveform("pump-1.de_accel", 0.0, FS, b)) == []
    assert det.last_diagnosis is None


def test_units_in_m_s2_are_converted_to_g() -> None:
    det = detector(fixed_rpm=SHAFT * 60, confirm_blocks=1)
    b = blocks("healthy", 1, 9)[0]
    det.update(Waveform("pump-1.de_accel", 0.0, FS, b * 9.80665, unit="m/s2"))
    assert det.last_diagnosis is not None
    assert det.last_diagnosis.features.accel_rms_g == pytest.approx(np.std(b), rel=1e-3)


def test_snapshot_restores_baseline_and_active_faults() -> None:
    det = detector(fixed_rpm=SHAFT * 60, rpm_tag=None)
    feed(det, blocks("healthy", 3, 10))
    feed(det, blocks("outer", 3, 11), t0=5)
    state = json.loads(json.dumps(det.snapshot()))  # plain JSON-able dict
    assert state["active"] == ["bearing.outer_race"]
    again = detector(fixed_rpm=SHAFT * 60, rpm_tag=None)
    again.restore(state)
    assert again.baseline.learned
    assert again.baseline.reference() == det.baseline.reference()
    out = feed(again, blocks("healthy", 3, 12), t0=30)
    assert [(f.fault_code, f.active) for f in out[2]] == [("bearing.outer_race", False)]


def test_half_overlapping_blocks_confirm_on_three_separate_looks_not_three_blocks() -> None:
    # The same faulty signal cut twice: contiguous blocks, and blocks every half block (each
    # repeats half of the one before). Confirmation counts analyses of separate data.
    x = np.concatenate(blocks("outer", 4, seed=21))
    block_s = BLOCK / FS
    for hop, expected in ((BLOCK, 2), (BLOCK // 2, 4)):
        det = detector(fixed_rpm=SHAFT * 60, rpm_tag=None)
        opened = []
        for i, start in enumerate(range(0, x.size - BLOCK + 1, hop)):
            wf = Waveform("pump-1.de_accel", start / FS, FS, x[start : start + BLOCK])
            opened += [i for f in det.update(wf) if f.active]
        assert opened == [expected], hop
    assert block_s > 0


def test_a_repeated_block_does_not_confirm_itself() -> None:
    det = detector(fixed_rpm=SHAFT * 60, rpm_tag=None)
    b = blocks("outer", 1, seed=22)[0]
    # A poller reading the device's buffer faster than it refreshes: same data, same ts.
    assert [det.update(Waveform("pump-1.de_accel", 5.0, FS, b)) for _ in range(5)] == [[]] * 5
    assert det.last_diagnosis is not None
    assert det.last_diagnosis.verdict == "bearing.outer_race"


def test_the_whole_bank_is_screened_first_and_at_each_refresh_the_focus_bands_between() -> None:
    det = detector(fixed_rpm=SHAFT * 60, rpm_tag=None, band_refresh_blocks=4)
    screened = []
    for i, b in enumerate(blocks("healthy", 9, seed=23)):
        det.update(Waveform("pump-1.de_accel", float(i), FS, b))
        assert det.last_diagnosis is not None
        screened.append(det.last_diagnosis.bands_screened)
    full = screened[0]
    assert full == 57  # 25.6 kHz, 16384 points: the whole band and levels 1-4
    assert [s == full for s in screened] == [True, False, False, False] * 2 + [True]
    assert all(1 <= s <= 5 for s in screened if s != full)  # the whole band + one per comb


def test_bands_remembered_at_one_rate_are_not_applied_beyond_another_rates_nyquist() -> None:
    det = detector(fixed_rpm=SHAFT * 60, rpm_tag=None)
    rng = np.random.default_rng(24)
    det.update(Waveform("pump-1.de_accel", 0.0, FS, 0.1 * rng.standard_normal(BLOCK)))
    assert det.last_diagnosis is not None and det.last_diagnosis.bands_screened == 57
    # The sensor is reconfigured to half the rate: the next analyses still run, on bands that
    # exist at 12.8 kHz.
    for i in range(1, 3):
        det.update(Waveform("pump-1.de_accel", float(i), FS / 2, 0.1 * rng.standard_normal(BLOCK)))
        d = det.last_diagnosis
        assert d is not None and d.fs == FS / 2 and det.problem is None
        assert d.bands_screened >= 1
