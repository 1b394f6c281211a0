"""Order peaks at 1x, 2x, 3x running speed and the classic readings built on them.

Rules of thumb shared by the vibration-analysis literature (e.g. ISO 13373-3 Annex, Scheffer &
Girdhar "Practical Machinery Vibration Analysis" ch. 5):
- unbalance: a dominant 1x line, little 2x or 3x;
- misalignment: 2x at or above half of 1x (often with 3x);
- mechanical looseness: a long series of running-speed harmonics, often with half orders.

These patterns only mean something when the machine vibrates enough to matter: below the ISO
zone A/B boundary a machine is "as new", and a 1x-dominated spectrum is simply what a healthy
machine looks like. So every reading is weighted by the ISO zone (0 in zone A).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detectors.vibration.iso20816 import Severity, Zone
from detectors.vibration.spectrum import HANN_COHERENT_GAIN, Spectra, SpectralPeak
from detectors.vibration.units import G_IN_MM_S2

ORDER_TOL_REL = 0.02  # speed tag and real speed differ by slip and reading error
LINE_MIN_SNR_DB = 10.0
ZONE_WEIGHT = {Zone.A: 0.0, Zone.B: 0.7, Zone.C: 0.9, Zone.D: 1.0}


@dataclass(frozen=True, slots=True)
class OrderReadings:
    peaks: dict[str, SpectralPeak]  # "1x", "2x", "3x": velocity RMS (mm/s) lines
    share_1x: float  # energy of the 1x line / overall velocity energy 10-1000 Hz
    ratio_2x_1x: float
    harmonics_seen: int  # significant lines among 3x..10x
    half_orders_seen: int  # significant lines at 0.5x, 1.5x, 2.5x

    def to_dict(self) -> dict[str, object]:
        return {
            "peaks": {k: p.to_dict("mm_s") for k, p in self.peaks.items()},
            "share_1x": round(self.share_1x, 3),
            "ratio_2x_1x": round(self.ratio_2x_1x, 3),
            "harmonics_3x_10x_seen": self.harmonics_seen,
            "half_orders_seen": self.half_orders_seen,
        }


def velocity_amplitude(spectra: Spectra, stop: int | None = None) -> np.ndarray:
    """Velocity RMS per bin (mm/s) from the Hann amplitude spectrum in g (bins below `stop`)."""
    f = spectra.freqs[:stop].copy()
    f[0] = np.inf
    amplitude = np.sqrt(spectra.mean_square[:stop]) * (2.0 / (spectra.n * HANN_COHERENT_GAIN))
    return amplitude * G_IN_MM_S2 / (2 * np.pi * f) / math.sqrt(2.0)


def order_readings(
    spectra: Spectra, shaft_hz: float, overall_mm_s: float, full: bool = True
) -> OrderReadings:
    """1x-3x lines; with `full`, also the 3x-10x and half-order counts used for looseness
    (skipped in ISO zone A, where no machine-fault reading is reported anyway)."""
    df = spectra.df
    half = max(5, round(shaft_hz / 2 / df))
    # Only the low end matters (up to 10.5x): slice it once and take its running median.
    keep = min(spectra.mean_square.size, int(11 * shaft_hz / df) + 2 * half + 2)
    vel = velocity_amplitude(spectra, keep)
    padded = np.pad(vel, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    # Odd windows: the median is the middle order statistic (a partition, no full median).
    floor = np.partition(windows, half, axis=1)[:, half]

    def line(order: float) -> SpectralPeak | None:
        f = order * shaft_hz
        tol = max(2 * df, ORDER_TOL_REL * f)
        lo, hi = max(1, int((f - tol) / df)), int(np.ceil((f + tol) / df))
        if f + 2 * df >= spectra.fs / 2 or hi >= keep:
            return None
        k = lo + int(np.argmax(vel[lo : hi + 1]))
        snr = 20 * np.log10(vel[k] / floor[k]) if floor[k] > 0 and vel[k] > 0 else 0.0
        return SpectralPeak(freq_hz=k * df, amplitude=float(vel[k]), snr_db=float(snr))

    peaks: dict[str, SpectralPeak] = {}
    for k in (1, 2, 3):
        p = line(k)
        if p is not None:
            peaks[f"{k}x"] = p
    v1 = peaks["1x"].amplitude if "1x" in peaks else 0.0
    v2 = peaks["2x"].amplitude if "2x" in peaks else 0.0
    seen = [line(k) for k in range(3, 11)] if full else []
    halves = [line(k + 0.5) for k in range(0, 3)] if full else []
    return OrderReadings(
        peaks=peaks,
        share_1x=min(1.0, v1**2 / overall_mm_s**2) if overall_mm_s > 0 else 0.0,
        ratio_2x_1x=v2 / v1 if v1 > 0 else 0.0,
        harmonics_seen=sum(1 for p in seen if p is not None and p.snr_db >= LINE_MIN_SNR_DB),
        half_orders_seen=sum(1 for p in halves if p is not None and p.snr_db >= LINE_MIN_SNR_DB),
    )


def machine_fault_confidences(readings: OrderReadings, severity: Severity) -> dict[str, float]:
    """Confidence in [0, 1] of unbalance, misalignment and looseness."""
    weight = ZONE_WEIGHT[severity.zone]
    one = readings.peaks.get("1x")
    two = readings.peaks.get("2x")
    one_seen = one is not None and one.snr_db >= LINE_MIN_SNR_DB
    two_seen = two is not None and two.snr_db >= LINE_MIN_SNR_DB
    unbalance = 0.0
    if one_seen and readings.share_1x >= 0.5 and readings.ratio_2x_1x < 0.5:
        unbalance = weight * min(1.0, readings.share_1x / 0.8)
    misalignment = 0.0
    if two_seen and readings.ratio_2x_1x >= 0.5:
        misalignment = weight * min(1.0, readings.ratio_2x_1x)
    looseness = 0.0
    evidence = readings.harmonics_seen + 2 * readings.half_orders_seen
    if readings.harmonics_seen >= 3 or readings.half_orders_seen >= 2:
        looseness = weight * min(1.0, evidence / 6.0)
    return {"unbalance": unbalance, "misalignment": misalignment, "looseness": looseness}
