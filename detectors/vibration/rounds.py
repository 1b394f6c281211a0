"""Spectral averaging over a round of live blocks (the `VibrationDetector`'s per-block work).

Commercial condition-monitoring systems measure overall levels continuously but diagnose on
spectra averaged over several blocks, every so often: averaging k power spectra lowers the
variance of the noise floor by k (lines stand out more reliably), and the diagnosis -- order
readings, defect combs, confirmation -- then runs once per round instead of once per block.

Per block this module does only what every block must get: the time-domain statistics (RMS,
peak, kurtosis, pooled over the round) and one Hann-windowed rFFT whose |X|^2 is added to the
round's sum. The complex spectra of the blocks the detector marks are kept, and only those
are demodulated for the envelope: an envelope spectrum costs more than the rFFT itself (a
complex inverse FFT of the band plus an rFFT of the squared envelope, see
bench/vibration/README.md). A round of one block is exactly the single-block analysis: same
spectrum, same statistics, bit for bit.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sp_fft

from detectors.vibration.spectrum import ComplexArray, FloatArray, Spectra, periodic_hann


class AveragingRound:
    """Accumulates the blocks of one averaging round; `spectra()` and `time_stats()` read it."""

    def __init__(self) -> None:
        self.fs = 0.0
        self.n = 0
        self.reset()

    def reset(self) -> None:
        """Start a new round (the block length and rate are kept until the next block)."""
        self.count = 0
        self._square_sum: FloatArray | None = None
        self._kept: list[ComplexArray] = []
        self._m2_sum = 0.0
        self._m4_sum = 0.0
        self._peak = 0.0
        self._speed_sum = 0.0
        self._speed_count = 0

    def restart_if_changed(self, n: int, fs: float) -> None:
        """A change of block length or rate starts a new round: spectra of different
        resolutions cannot be averaged."""
        if self.count and (n != self.n or fs != self.fs):
            self.reset()

    def add(
        self,
        block: FloatArray,
        fs: float,
        shaft_hz: float | None,
        lo: float,
        hi: float,
        *,
        keep_spectrum: bool,
    ) -> None:
        """Add one checked block (in g) whose extremes are `lo` and `hi`; `keep_spectrum` keeps
        its complex spectrum for the envelope. Call `restart_if_changed` first."""
        n = block.size
        self.fs, self.n = fs, n
        # The centred block serves the statistics and, windowed in place, the transform.
        mean = float(np.add.reduce(block)) / n  # = block.mean(), without its Python layer
        x = block - mean
        x2 = x * x
        self._m2_sum += float(np.dot(x, x)) / n
        self._m4_sum += float(np.dot(x2, x2)) / n
        self._peak = max(self._peak, hi - mean, mean - lo)
        x *= periodic_hann(n)
        spectrum = sp_fft.rfft(x, overwrite_x=True)
        re, im = spectrum.real, spectrum.imag
        if self._square_sum is None:
            self._square_sum = re * re
        else:
            self._square_sum += re * re
        self._square_sum += im * im
        if keep_spectrum:
            self._kept.append(spectrum)
        self.count += 1
        if shaft_hz is not None:
            self._speed_sum += shaft_hz
            self._speed_count += 1

    @property
    def shaft_hz(self) -> float | None:
        """Mean of the running speeds the round's blocks came with (None if none did)."""
        return self._speed_sum / self._speed_count if self._speed_count else None

    def spectra(self) -> Spectra:
        """The round's averaged power spectrum, with the complex spectra of the kept blocks."""
        if self._square_sum is None or not self._kept:
            raise ValueError("no block kept in the averaging round")
        averaged = self._square_sum if self.count == 1 else self._square_sum / self.count
        kept = self._kept[0][None, :] if len(self._kept) == 1 else np.stack(self._kept)
        return Spectra(fs=self.fs, n=self.n, hann=kept, averaged_square=averaged)

    def time_stats(self) -> tuple[float, float, float, float]:
        """RMS, peak, crest factor and kurtosis over the round (moments pooled over blocks)."""
        power = self._m2_sum / self.count
        rms = float(np.sqrt(power))
        kurt = (self._m4_sum / self.count) / power**2 if power > 0 else 0.0
        crest = self._peak / rms if rms > 0 else 0.0
        return rms, self._peak, crest, kurt
