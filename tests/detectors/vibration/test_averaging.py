"""`VibrationDetector` with spectral averaging (`average_blocks`) and its feature samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detectors.vibration import BearingCatalogue, Foundation, MachineGroup, VibrationDetector
from detectors.vibration.diagnose import Settings, analyse_blocks
from gateway.core.records import FaultCode, Quality, Waveform

from .signals import bearing_fault

FS = 25600.0
BLOCK = 16384
SHAFT = 29.95
TAG = "pump-1.de_accel"
BEARING = BearingCatalogue.load().get("6205")


def healthy(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [0.1 * rng.standard_normal(BLOCK) for _ in range(count)]


def outer(count: int, seed: int) -> list[np.ndarray]:
    x = bearing_fault(
        "outer", multiplier=3.5848, fs=FS, seconds=BLOCK * count / FS, shaft_hz=SHAFT, seed=seed
    )
    return [x[i * BLOCK : (i + 1) * BLOCK] for i in range(count)]


def detector(**kw: Any) -> VibrationDetector:
    return VibrationDetector(
        asset="pump-1", tag_id=TAG, geometry=BEARING, fixed_rpm=SHAFT * 60, **kw
    )


def wave(data: np.ndarray, ts: float) -> Waveform:
    return Waveform(TAG, ts, FS, data)


def test_one_block_rounds_equal_the_offline_analysis_of_that_block() -> None:
    det = detector(confirm_blocks=1)
    block = outer(1, seed=1)[0]
    det.update(wave(block, 0.0))
    offline = analyse_blocks(
        block[None, :],
        FS,
        shaft_hz=SHAFT,
        speed_source="fixed",
        geometry=BEARING,
        group=MachineGroup.MEDIUM,
        foundation=Foundation.RIGID,
        settings=Settings(),
    )
    assert det.last_diagnosis is not None
    assert det.last_diagnosis.to_dict() == offline.to_dict()


def test_a_round_is_analysed_once_from_the_averaged_spectra_of_its_blocks() -> None:
    det = detector(average_blocks=4)
    data = healthy(4, seed=2)
    for i, block in enumerate(data[:3]):
        assert det.update(wave(block, float(i))) == []
        assert det.last_diagnosis is None and det.feature_samples() == []
    det.update(wave(data[3], 3.0))
    d = det.last_diagnosis
    assert d is not None and d.blocks == 4
    assert d.notes[0] == "spectra averaged over 4 blocks, envelope spectra over 1 of them"
    # Severity from the power spectra averaged over the round = the offline analysis of the
    # same four blocks; RMS and kurtosis pooled over the blocks' own moments.
    offline = analyse_blocks(
        np.stack(data),
        FS,
        shaft_hz=SHAFT,
        speed_source="fixed",
        geometry=BEARING,
        group=MachineGroup.MEDIUM,
        foundation=Foundation.RIGID,
        settings=Settings(),
    )
    assert d.features.velocity_rms_mm_s == pytest.approx(
        offline.features.velocity_rms_mm_s, rel=1e-12
    )
    assert d.features.bands_g == pytest.approx(offline.features.bands_g, rel=1e-12)
    centred = [b - b.mean() for b in data]
    power = np.mean([np.mean(c**2) for c in centred])
    assert d.features.accel_rms_g == pytest.approx(np.sqrt(power), rel=1e-12)
    kurt = np.mean([np.mean(c**4) for c in centred]) / power**2
    assert d.features.kurtosis == pytest.approx(kurt, rel=1e-12)
    assert d.features.accel_peak_g == pytest.approx(max(np.abs(c).max() for c in centred))


def test_long_rounds_average_the_envelope_of_blocks_spread_over_the_round() -> None:
    det = detector(average_blocks=64)
    for i, block in enumerate(healthy(64, seed=3)):
        det.update(wave(block, float(i)))
    assert det.last_diagnosis is not None and det.last_diagnosis.blocks == 64
    assert det.last_diagnosis.notes[0] == (
        "spectra averaged over 64 blocks, envelope spectra over 2 of them"
    )
    assert det.last_diagnosis.verdict == "normal"


def test_confirmation_counts_rounds() -> None:
    det = detector(average_blocks=3, confirm_blocks=2, baseline_blocks=2)
    for i, block in enumerate(healthy(6, seed=4)):
        assert det.update(wave(block, float(i))) == []
    assert det.baseline.learned and det.baseline.count == 2
    out = [det.update(wave(b, 10.0 + i)) for i, b in enumerate(outer(6, seed=5))]
    raised = [(i, f.fault_code) for i, fs in enumerate(out) for f in fs if f.active]
    # Seen in the first faulty round (block 2), confirmed by the second (block 5).
    assert raised == [(5, FaultCode.BEARING_OUTER_RACE)]
    assert out[5][0].ts == 15.0
    assert out[5][0].evidence["matched"]["defect_line"] == "BPFO"


def test_a_bad_block_is_left_out_of_the_round_and_a_new_block_length_restarts_it() -> None:
    det = detector(average_blocks=2)
    a, b, c = healthy(3, seed=6)
    bad = a.copy()
    bad[5] = np.nan
    det.update(wave(a, 0.0))
    det.update(wave(bad, 1.0))  # refused, not counted
    assert det.last_diagnosis is None
    det.update(wave(b[: BLOCK // 2], 2.0))  # another length: the round starts again
    assert det.last_diagnosis is None
    det.update(wave(c[: BLOCK // 2], 3.0))
    assert det.last_diagnosis is not None
    assert det.last_diagnosis.blocks == 2 and det.last_diagnosis.block_length == BLOCK // 2


def test_feature_samples_give_the_last_analysis_once() -> None:
    det = detector()
    assert det.feature_samples() == []
    block = healthy(1, seed=7)[0]
    det.update(wave(block, 42.0))
    samples = det.feature_samples()
    assert [s.tag for s in samples] == [
        f"{TAG}.velocity_rms_mm_s",
        f"{TAG}.accel_rms_g",
        f"{TAG}.accel_peak_g",
        f"{TAG}.crest_factor",
        f"{TAG}.kurtosis",
    ]
    assert all(s.ts == 42.0 and s.quality is Quality.GOOD for s in samples)
    values = {s.tag.rsplit(".", 1)[1]: float(s.value or 0.0) for s in samples}
    assert values["accel_rms_g"] == pytest.approx(np.std(block), rel=1e-9)
    assert values["kurtosis"] == pytest.approx(3.0, abs=0.2)  # Gaussian noise
    assert values["crest_factor"] == pytest.approx(values["accel_peak_g"] / values["accel_rms_g"])
    assert det.last_diagnosis is not None
    assert values["velocity_rms_mm_s"] == det.last_diagnosis.features.velocity_rms_mm_s
    assert det.feature_samples() == []  # forgotten once taken
    bad = block.copy()
    bad[0] = np.inf
    det.update(wave(bad, 43.0))
    assert det.feature_samples() == []  # nothing analysed since


def test_average_blocks_must_be_positive() -> None:
    with pytest.raises(ValueError, match="average_blocks"):
        detector(average_blocks=0)
