"""Broadband condition indicators of a block (acceleration in g)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detectors.vibration.spectrum import FloatArray, Spectra, band_energies, velocity_rms_mm_s


@dataclass(frozen=True, slots=True)
class Features:
    accel_rms_g: float
    accel_peak_g: float
    crest_factor: float
    kurtosis: float  # Pearson: 3 for Gaussian noise, higher for impacts
    velocity_rms_mm_s: float  # 10-1000 Hz, the ISO 10816-3 quantity
    bands_g: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        out = {
            "accel_rms_g": self.accel_rms_g,
            "accel_peak_g": self.accel_peak_g,
            "crest_factor": self.crest_factor,
            "kurtosis": self.kurtosis,
            "velocity_rms_mm_s": self.velocity_rms_mm_s,
            **self.bands_g,
        }
        return {k: round(float(v), 5) for k, v in out.items()}


def time_features(signal: FloatArray) -> tuple[float, float, float, float]:
    """RMS, peak, crest factor and kurtosis of the demeaned signal."""
    # Dot products and min/max instead of temporaries of |x| and x^4: three passes fewer.
    mean = float(signal.mean())
    x = signal - mean
    x2 = x * x
    power = float(np.dot(x, x)) / x.size
    rms = float(np.sqrt(power))
    peak = max(float(signal.max()) - mean, mean - float(signal.min()))
    kurt = float(np.dot(x2, x2)) / x.size / power**2 if power > 0 else 0.0
    crest = peak / rms if rms > 0 else 0.0
    return rms, peak, crest, kurt


def compute_features(
    signal: FloatArray, spectra: Spectra, bands: list[tuple[float, float]]
) -> Features:
    return spectral_features(time_features(signal), spectra, bands)


def spectral_features(
    time_stats: tuple[float, float, float, float],
    spectra: Spectra,
    bands: list[tuple[float, float]],
) -> Features:
    """`Features` from (RMS, peak, crest, kurtosis) and the spectrum they come with."""
    rms, peak, crest, kurt = time_stats
    return Features(
        accel_rms_g=rms,
        accel_peak_g=peak,
        crest_factor=crest,
        kurtosis=kurt,
        velocity_rms_mm_s=velocity_rms_mm_s(spectra),
        bands_g=band_energies(spectra, bands),
    )
