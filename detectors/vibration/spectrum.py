"""Narrow-band spectra of a stack of blocks, computed from one rFFT per block.

The rFFT of each demeaned, periodic-Hann-windowed block (`Spectra.hann`) is the only
transform of the block: the amplitudes, the velocity integration, the band energies, the order
peaks and the pre-whitened spectrum the envelope is demodulated from all read it. Windows,
frequency axes and integration weights depend only on (n, fs) and are cached, since a live
channel sends the same block length at the same rate every time (bench/vibration).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt
from scipy import fft as sp_fft

from detectors.vibration.units import G_IN_MM_S2

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]

HANN_POWER_PER_SAMPLE = 3.0 / 8.0  # mean of w^2 for the periodic Hann window
HANN_COHERENT_GAIN = 0.5  # mean of w


@dataclass(frozen=True)
class Spectra:
    """Hann-windowed rFFT of every block of a (blocks, n) stack, in g."""

    fs: float
    n: int
    hann: ComplexArray  # (blocks, n // 2 + 1), block mean removed, periodic Hann window
    # |X_hann|^2 averaged over more blocks than `hann` keeps (the live detector's averaging
    # round keeps only its last block's complex spectrum, for the envelope); None: from `hann`.
    averaged_square: FloatArray | None = None

    @property
    def df(self) -> float:
        return self.fs / self.n

    @property
    def freqs(self) -> FloatArray:
        return rfft_freqs(self.n, self.fs)

    @cached_property
    def mean_square(self) -> FloatArray:
        """|X_hann|^2 per bin, averaged over blocks (shared by power and amplitude)."""
        if self.averaged_square is not None:
            return self.averaged_square
        h = self.hann
        sq = h.real * h.real + h.imag * h.imag
        return sq[0] if sq.shape[0] == 1 else np.mean(sq, axis=0)

    @cached_property
    def hann_power(self) -> FloatArray:
        """Mean square per bin (g^2), averaged over blocks; sums to the signal's mean square."""
        p = self.mean_square * (2.0 / (self.n**2 * HANN_POWER_PER_SAMPLE))
        p[0] /= 2.0
        if self.n % 2 == 0:
            p[-1] /= 2.0
        return p

    @cached_property
    def amplitude(self) -> FloatArray:
        """Peak amplitude (g) a sinusoid at a bin centre would have, power-averaged over blocks."""
        return np.sqrt(self.mean_square) * (2.0 / (self.n * HANN_COHERENT_GAIN))


@functools.lru_cache(maxsize=16)
def periodic_hann(n: int) -> FloatArray:
    """Periodic Hann window of length n (read-only, cached per block length)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=16)
def rfft_freqs(n: int, fs: float) -> FloatArray:
    """Bin frequencies of an n-point rFFT at fs (read-only, cached)."""
    f = np.fft.rfftfreq(n, 1.0 / fs).astype(np.float64)
    f.flags.writeable = False
    return f


def block_spectra(blocks: FloatArray, fs: float) -> Spectra:
    """Hann-windowed rFFT of each row after removing its mean (scipy's pocketfft: the same
    transform as numpy's, faster on this size)."""
    n = blocks.shape[1]
    centred = blocks - blocks.mean(axis=1, keepdims=True)
    centred *= periodic_hann(n)
    return Spectra(fs=fs, n=n, hann=sp_fft.rfft(centred, axis=1))


def band_rms(spectra: Spectra, lo_hz: float, hi_hz: float) -> float:
    """Acceleration RMS (g) of the band [lo, hi)."""
    # Bins are k * df: [lo, hi) is the contiguous slice ceil(lo/df) .. ceil(hi/df) - 1.
    k1, k2 = _band_slice(spectra.n, spectra.fs, lo_hz, hi_hz)
    return float(np.sqrt(np.sum(spectra.hann_power[k1:k2])))


@functools.lru_cache(maxsize=64)
def _band_slice(n: int, fs: float, lo_hz: float, hi_hz: float) -> tuple[int, int]:
    sel = np.flatnonzero((rfft_freqs(n, fs) >= lo_hz) & (rfft_freqs(n, fs) < hi_hz))
    return (int(sel[0]), int(sel[-1]) + 1) if sel.size else (0, 0)


def velocity_rms_mm_s(spectra: Spectra, lo_hz: float = 10.0, hi_hz: float = 1000.0) -> float:
    """Velocity RMS (mm/s) in [lo, hi] by integrating the acceleration spectrum: V = A / (2 pi f).

    Frequency-domain integration avoids the drift of time-domain integration; the band is the
    ISO 10816-3 measurement band.
    """
    k1, weights = _velocity_weights(spectra.n, spectra.fs, lo_hz, hi_hz)
    return float(np.sqrt(np.dot(spectra.hann_power[k1 : k1 + weights.size], weights)))


@functools.lru_cache(maxsize=16)
def _velocity_weights(n: int, fs: float, lo_hz: float, hi_hz: float) -> tuple[int, FloatArray]:
    """First bin and (g -> mm/s)^2 / omega^2 weights of the bins in [lo, hi] (cached)."""
    f = rfft_freqs(n, fs)
    sel = np.flatnonzero((f >= lo_hz) & (f <= hi_hz))
    if sel.size == 0:
        return 0, np.zeros(0)
    weights = (G_IN_MM_S2 / (2.0 * np.pi * f[sel[0] : sel[-1] + 1])) ** 2
    weights.flags.writeable = False
    return int(sel[0]), weights


def band_energies(spectra: Spectra, bands: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Configurable acceleration band RMS values, keyed `band_<lo>_<hi>_hz_g`."""
    out: dict[str, float] = {}
    nyquist = spectra.fs / 2
    for lo, hi in bands:
        if lo >= nyquist:
            continue
        out[f"band_{lo:g}_{min(hi, nyquist):g}_hz_g"] = band_rms(spectra, lo, min(hi, nyquist))
    return out


def default_bands(fs: float) -> list[tuple[float, float]]:
    """Low (machine), mid (gear/blade pass) and high (bearing resonance) bands."""
    nyquist = fs / 2
    return [(10.0, 1000.0), (1000.0, min(5000.0, nyquist)), (5000.0, nyquist)]


@dataclass(frozen=True, slots=True)
class SpectralPeak:
    freq_hz: float
    amplitude: float  # in the unit of the spectrum searched
    snr_db: float

    def to_dict(self, unit: str) -> dict[str, float]:
        return {
            "freq_hz": round(self.freq_hz, 2),
            f"amplitude_{unit}": round(self.amplitude, 5),
            "snr_db": round(self.snr_db, 1),
        }


def local_floor(values: FloatArray, index: int, half_width: int) -> float:
    """Median of the neighbourhood: robust to the few lines inside it."""
    lo = max(0, index - half_width)
    hi = min(values.size, index + half_width + 1)
    window = values[lo:hi]
    if window.size % 2 == 1:  # the middle order statistic, without np.median's overhead
        return float(np.partition(window, window.size // 2)[window.size // 2])
    return float(np.median(window))


def peak_near(
    values: FloatArray, df: float, target_hz: float, tol_hz: float, floor_half_width: int
) -> SpectralPeak | None:
    """Largest bin within target +- tol, with its SNR (power ratio to the local median, dB)."""
    lo = max(1, int(np.floor((target_hz - tol_hz) / df)))
    hi = min(values.size - 1, int(np.ceil((target_hz + tol_hz) / df)))
    if hi < lo:
        return None
    k = lo + int(np.argmax(values[lo : hi + 1]))
    floor = local_floor(values, k, floor_half_width)
    snr = 20.0 * np.log10(values[k] / floor) if floor > 0 and values[k] > 0 else 0.0
    return SpectralPeak(freq_hz=k * df, amplitude=float(values[k]), snr_db=float(snr))


def top_peaks(values: FloatArray, df: float, count: int, min_hz: float = 0.0) -> list[SpectralPeak]:
    """The `count` largest local maxima above `min_hz`, by amplitude."""
    start = max(1, int(np.ceil(min_hz / df)))
    v = values
    inner = v[start:-1]
    is_max = (inner > v[start - 1 : -2]) & (inner >= v[start + 1 :])
    idx = np.flatnonzero(is_max) + start
    if idx.size == 0:
        return []
    best = idx[np.argsort(v[idx])[::-1][:count]]
    half = max(5, round(10.0 / df))
    return [
        SpectralPeak(
            freq_hz=float(k * df),
            amplitude=float(v[k]),
            snr_db=float(20 * np.log10(v[k] / max(local_floor(v, int(k), half), 1e-300))),
        )
        for k in best
    ]
