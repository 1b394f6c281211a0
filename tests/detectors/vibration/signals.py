"""Synthetic vibration signals with known faults, for the unit tests."""

from __future__ import annotations

import numpy as np

G_MM_S2 = 9806.65


def ringing_impacts(
    times: np.ndarray, n: int, fs: float, resonance_hz: float, amplitudes: np.ndarray
) -> np.ndarray:
    """Impacts at `times` (s) each ringing a damped resonance."""
    impulses = np.zeros(n)
    idx = np.round(times * fs).astype(int)
    keep = idx < n
    np.add.at(impulses, idx[keep], amplitudes[keep])
    t = np.arange(int(0.01 * fs)) / fs
    ring = np.exp(-2 * np.pi * 0.05 * resonance_hz * t) * np.sin(2 * np.pi * resonance_hz * t)
    return np.convolve(impulses, ring)[:n]


def bearing_fault(
    kind: str,
    *,
    fs: float = 12000.0,
    seconds: float = 4.0,
    shaft_hz: float = 29.95,
    multiplier: float,
    slip: float = 0.01,
    snr_amplitude: float = 1.0,
    noise: float = 0.5,
    seed: int = 0,
    ftf_multiplier: float = 0.3983,
) -> np.ndarray:
    """Impulse train at the defect frequency exciting a 3.5 kHz resonance, plus noise.

    `inner`: amplitudes modulated by shaft speed (the defect passes through the load zone);
    `ball`: modulated by the cage frequency; `outer`: constant. 1 % slip and 1 % jitter.
    """
    rng = np.random.default_rng(seed)
    n = int(fs * seconds)
    f_defect = multiplier * shaft_hz * (1 - slip)
    period = 1.0 / f_defect
    count = int(seconds * f_defect)
    times = np.arange(count) * period + rng.normal(0, 0.01 * period, count)
    times = np.clip(times, 0, seconds - 1 / fs)
    amps = np.full(count, snr_amplitude)
    if kind == "inner":
        amps *= 1 + 0.9 * np.cos(2 * np.pi * shaft_hz * times)
    elif kind == "ball":
        amps *= 1 + 0.9 * np.cos(2 * np.pi * ftf_multiplier * shaft_hz * times)
    x = ringing_impacts(times, n, fs, 3500.0, amps)
    t = np.arange(n) / fs
    x += 0.02 * np.sin(2 * np.pi * shaft_hz * t)
    return x + noise * rng.standard_normal(n) * np.std(x)


def sine_velocity(
    velocity_rms_mm_s: float, freq_hz: float, fs: float, seconds: float
) -> np.ndarray:
    """Acceleration (g) of a sinusoid with the given velocity RMS."""
    t = np.arange(int(fs * seconds)) / fs
    accel_peak_g = velocity_rms_mm_s * np.sqrt(2) * 2 * np.pi * freq_hz / G_MM_S2
    return accel_peak_g * np.sin(2 * np.pi * freq_hz * t)
