"""Running speed: from a tag when there is one, otherwise estimated from the spectrum.

The estimate looks for the shaft frequency whose harmonics (1x..4x) together stand highest
above the local spectral floor, inside the machine's plausible speed range. A machine rarely
shows 2x-4x of a frequency it does not turn at, so the harmonic sum resists a stray line
(mains, a neighbour machine) better than the single largest peak.
"""

from __future__ import annotations

import numpy as np

from detectors.vibration.spectrum import Spectra, local_floor

HARMONICS = 4
MIN_SNR_DB = 10.0  # the 1x line must stand clear of the floor to be trusted


def estimate_shaft_hz(
    spectra: Spectra, min_hz: float = 5.0, max_hz: float = 100.0
) -> tuple[float, float] | None:
    """(shaft Hz, SNR dB of its 1x line), or None when no convincing shaft line is found."""
    amp = spectra.amplitude
    df = spectra.df
    nyquist = spectra.fs / 2
    max_hz = min(max_hz, nyquist / HARMONICS)
    lo = max(2, int(np.ceil(min_hz / df)))
    hi = int(np.floor(max_hz / df))
    if hi <= lo:
        return None
    half = max(5, round(min_hz / df))
    floor = np.array([local_floor(amp, k, half) for k in range(1, HARMONICS * hi + 2)])
    ratio = amp[1 : HARMONICS * hi + 2] / np.maximum(floor, 1e-300)

    def strength(k: int) -> float:
        # Harmonic h of bin k lies at bin h*k (+-1 for rounding); clip so lines dominate.
        total = 0.0
        for h in range(1, HARMONICS + 1):
            c = h * k - 1
            total += float(np.log10(np.clip(ratio[c - 1 : c + 2].max(), 1.0, 1e3)))
        return total

    scores = [strength(k) for k in range(lo, hi + 1)]
    best = lo + int(np.argmax(scores))
    snr = 20 * float(np.log10(max(ratio[best - 1], 1e-12)))
    if snr < MIN_SNR_DB:
        return None
    # Parabolic interpolation on the 1x line for a sub-bin estimate.
    a, b, c = amp[best - 1], amp[best], amp[best + 1]
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
    return (best + float(np.clip(shift, -0.5, 0.5))) * df, snr
