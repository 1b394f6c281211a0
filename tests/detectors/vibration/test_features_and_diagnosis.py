"""Features and whole-signal diagnosis on synthetic signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.vibration import BadSignal, BearingCatalogue, Zone
from detectors.vibration.diagnose import diagnose
from detectors.vibration.features import time_features
from detectors.vibration.spectrum import block_spectra, velocity_rms_mm_s
from detectors.vibration.speed import estimate_shaft_hz

from .signals import bearing_fault, sine_velocity

FS = 12000.0
SHAFT = 29.95


@pytest.fixture(scope="module")
def skf6205():
    return BearingCatalogue.load().get("6205")


def test_velocity_rms_of_a_sine_by_frequency_domain_integration() -> None:
    x = sine_velocity(4.0, 50.0, FS, 2.0)
    spectra = block_spectra(x.reshape(4, -1)[:, :4096], FS)
    assert velocity_rms_mm_s(spectra) == pytest.approx(4.0, rel=0.02)


def test_velocity_band_excludes_lines_outside_10_to_1000_hz() -> None:
    x = sine_velocity(4.0, 5.0, FS, 2.0) + sine_velocity(4.0, 2000.0, FS, 2.0)
    spectra = block_spectra(x[None, :16384], FS)
    assert velocity_rms_mm_s(spectra) < 0.2


def test_time_features_of_sine_and_noise() -> None:
    rms, _peak, crest, kurt = time_features(np.sin(np.linspace(0, 200 * np.pi, 100_000)))
    assert rms == pytest.approx(np.sqrt(0.5), rel=1e-3)
    assert crest == pytest.approx(np.sqrt(2), rel=1e-3)
    assert kurt == pytest.approx(1.5, rel=1e-2)
    _, _, _, kurt_noise = time_features(np.random.default_rng(0).standard_normal(200_000))
    assert kurt_noise == pytest.approx(3.0, abs=0.05)


def test_outer_race_impulse_train_is_diagnosed_as_outer_race(skf6205) -> None:
    x = bearing_fault("outer", multiplier=3.5848, shaft_hz=SHAFT, fs=FS)
    d = diagnose(x, FS, shaft_hz=SHAFT, geometry=skf6205)
    assert d.verdict == "bearing.outer_race"
    ev = d.faults[0].evidence
    assert ev["matched_hz"] == pytest.approx(3.5848 * SHAFT * 0.99, rel=0.01)
    assert len(ev["harmonics"]) >= 2
    assert ev["snr_db"] > 10


def test_inner_race_modulated_by_shaft_is_diagnosed_as_inner_race(skf6205) -> None:
    x = bearing_fault("inner", multiplier=5.4152, shaft_hz=SHAFT, fs=FS, seed=1)
    d = diagnose(x, FS, shaft_hz=SHAFT, geometry=skf6205)
    assert d.verdict == "bearing.inner_race"
    assert d.faults[0].evidence["sidebands"] >= 1
    assert "bearing.outer_race" not in {f.code for f in d.faults}


def test_ball_fault_modulated_by_cage_is_diagnosed_as_rolling_element(skf6205) -> None:
    # Impacts at 2 x BSF (the ball strikes both races once per spin), modulated by FTF.
    x = bearing_fault("ball", multiplier=2 * 2.3567, shaft_hz=SHAFT, fs=FS, seed=2)
    d = diagnose(x, FS, shaft_hz=SHAFT, geometry=skf6205)
    assert d.verdict == "bearing.rolling_element"


def test_healthy_noise_is_normal(skf6205) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(int(4 * FS)) / FS
    x = 0.1 * rng.standard_normal(t.size) + 0.005 * np.sin(2 * np.pi * SHAFT * t)
    d = diagnose(x, FS, shaft_hz=SHAFT, geometry=skf6205)
    assert d.verdict == "normal"
    assert d.faults == []
    assert max(d.screened.values()) < 0.5


def test_pure_1x_in_zone_c_is_unbalance(skf6205) -> None:
    rng = np.random.default_rng(4)
    x = sine_velocity(3.5, SHAFT, FS, 4.0) + 0.01 * rng.standard_normal(int(4 * FS))
    d = diagnose(x, FS, shaft_hz=SHAFT, geometry=skf6205)
    assert d.iso.zone is Zone.C
    assert d.iso.velocity_rms_mm_s == pytest.approx(3.5, rel=0.03)
    assert d.verdict == "unbalance"
    assert {f.code for f in d.faults} == {"unbalance", "vibration.severity"}


def test_strong_2x_is_misalignment() -> None:
    rng = np.random.default_rng(5)
    x = (
        sine_velocity(1.5, SHAFT, FS, 4.0)
        + sine_velocity(1.6, 2 * SHAFT, FS, 4.0)
        + 0.01 * rng.standard_normal(int(4 * FS))
    )
    d = diagnose(x, FS, shaft_hz=SHAFT)
    assert d.verdict == "misalignment"


def test_pure_1x_in_zone_a_is_not_a_fault(skf6205) -> None:
    rng = np.random.default_rng(6)
    x = sine_velocity(0.5, SHAFT, FS, 4.0) + 0.01 * rng.standard_normal(int(4 * FS))
    d = diagnose(x, FS, shaft_hz=SHAFT, geometry=skf6205)
    assert d.iso.zone is Zone.A
    assert d.verdict == "normal"


def test_speed_is_estimated_from_harmonics_when_not_given() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(int(4 * FS)) / FS
    x = sum(0.05 / k * np.sin(2 * np.pi * k * 24.7 * t) for k in (1, 2, 3))
    x = x + 0.01 * rng.standard_normal(t.size)
    spectra = block_spectra(x[None, :32768], FS)
    estimate = estimate_shaft_hz(spectra)
    assert estimate is not None
    assert estimate[0] == pytest.approx(24.7, abs=0.2)
    d = diagnose(x, FS)
    assert d.speed_source == "estimated"
    assert d.shaft_hz == pytest.approx(24.7, abs=0.2)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda x: np.where(np.arange(x.size) == 100, np.nan, x), "NaN"),
        (lambda x: np.clip(x, -0.5 * np.abs(x).max(), 0.5 * np.abs(x).max()), "clipped"),
        (lambda x: x[:500], "too short"),
        (lambda x: np.zeros_like(x), "flat"),
    ],
)
def test_bad_signals_are_refused_with_the_reason(skf6205, mutate, message) -> None:
    x = bearing_fault("outer", multiplier=3.5848, fs=FS, seconds=2.0)
    with pytest.raises(BadSignal, match=message):
        diagnose(mutate(x), FS, shaft_hz=SHAFT, geometry=skf6205)


def test_speed_that_puts_bearing_lines_beyond_reach_is_refused(skf6205) -> None:
    x = bearing_fault("outer", multiplier=3.5848, fs=FS, seconds=2.0)
    with pytest.raises(BadSignal, match="bearing frequencies out of reach"):
        diagnose(x, FS, shaft_hz=300.0, geometry=skf6205)


def test_block_too_short_for_a_slow_shaft_is_refused(skf6205) -> None:
    x = bearing_fault("outer", multiplier=3.5848, fs=FS, seconds=1.0)
    with pytest.raises(BadSignal, match="revolutions"):
        diagnose(x, FS, shaft_hz=2.0, geometry=skf6205)
