"""Envelope analysis: pick a resonance band, demodulate it, take the squared-envelope spectrum.

A local bearing defect makes a train of short impacts that ring a structural resonance; the
repetition rate (BPFO, BPFI, ...) shows in the spectrum of the squared envelope of that band,
not in the raw spectrum (Randall & Antoni, MSSP 25 (2011) 485-520).

Steps, all from the one rFFT per block kept in `Spectra`:

1. Cepstral pre-whitening (X / |X|; Sawalhi & Randall 2011, Borghesani et al. MSSP 36 (2013)):
   removes the discrete lines of shafts, gears and mains and the colouring of the transfer path,
   so impulsive content is not masked by strong periodic content. It is one of the two methods
   Smith & Randall (MSSP 64-65, 2015) found most reliable on the CWRU data.
2. Band choice by spectral kurtosis: an FFT filter bank in the shape of Antoni's fast kurtogram
   (MSSP 21 (2007) 108-124) -- at level L the bands are fs / 2^(L+1) wide and overlap by half --
   and the band whose complex envelope has the highest kurtosis wins. We compute each band
   directly from the rFFT bins instead of with Antoni's quasi-analytic filter tree: same bands,
   same statistic, exact band edges, and no extra FFTs beyond one inverse FFT per band. Bands
   narrower than the highest defect line we match (plus sidebands) are not offered, since the
   envelope spectrum of a band only reaches its bandwidth.
3. Complex envelope: the band's bins are shifted to baseband and inverse-transformed at a
   decimated length M (a power-of-two fraction of n, at least twice the band's bin count so the
   squared envelope does not alias). Its samples are exactly the analytic signal's envelope at
   every (n/M)-th instant, so the envelope spectrum keeps the block's resolution fs/n.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

from detectors.vibration.spectrum import ComplexArray, FloatArray, Spectra


@dataclass(frozen=True, slots=True)
class Band:
    lo_hz: float
    hi_hz: float
    level: int  # 0 = whole band; level L bands are fs / 2^(L+1) wide
    kurtosis: float  # spectral kurtosis: complex-envelope kurtosis - 2 (0 for Gaussian noise)

    def to_dict(self) -> dict[str, float]:
        return {
            "lo_hz": round(self.lo_hz, 1),
            "hi_hz": round(self.hi_hz, 1),
            "level": self.level,
            "spectral_kurtosis": round(self.kurtosis, 3),
        }


@dataclass(frozen=True)
class EnvelopeSpectrum:
    """Squared-envelope spectrum amplitude (g^2), averaged over blocks; bin k is k * df Hz."""

    method: str  # "whitened_full_band" | "whitened_sk_band"
    band: Band
    df: float
    values: FloatArray


def prewhiten(hann: ComplexArray) -> ComplexArray:
    """Unit magnitude, phase kept: the simplest form of cepstral pre-whitening.

    Takes the Hann-windowed spectrum (`Spectra.hann`), see `_sk` for why.
    """
    raw = hann
    mag = np.abs(raw)
    floor = np.finfo(np.float64).tiny
    out = raw / np.maximum(mag, floor)
    out[:, 0] = 0.0
    return out


def _decimation(n: int, band_bins: int) -> int:
    """Largest power of two d dividing n with n/d >= 2 * band_bins."""
    d = 1
    while n % (2 * d) == 0 and n // (2 * d) >= 2 * band_bins:
        d *= 2
    return d


def complex_envelope(whitened: ComplexArray, n: int, k1: int, k2: int) -> ComplexArray:
    """Baseband analytic signal of bins [k1, k2) at n/d samples per block."""
    return _baseband(whitened, k1, k2, n // _decimation(n, k2 - k1))


def _sk(z: ComplexArray) -> float:
    """Kurtosis of the complex envelope minus 2, over the middle half of each block.

    The blocks are Hann-windowed before whitening (a rectangular block's wrap-around step
    would whiten into a broadband impulse and win every band); the envelope is divided by the
    window's power and only the middle half, where that power exceeds 1/2, is used.
    """
    m = z.shape[1]
    lo, hi = m // 4, m - m // 4
    w2 = _hann_power(m)[lo:hi]
    p = (z[:, lo:hi] * z[:, lo:hi].conj()).real / w2
    m2 = p.mean(axis=1)
    m4 = (p * p).mean(axis=1)
    return float(np.mean(m4 / np.maximum(m2 * m2, 1e-300) - 2.0))


@functools.lru_cache(maxsize=32)
def _hann_power(m: int) -> FloatArray:
    """Periodic Hann window squared (cached: the same few lengths recur every block)."""
    w = np.hanning(m + 1)[:-1]
    out = w * w
    out.flags.writeable = False
    return out


def candidate_bands(
    n: int, fs: float, min_width_hz: float, max_level: int
) -> list[tuple[int, int, int]]:
    """(k1, k2, level) of the whole band and of each kurtogram band at least `min_width_hz` wide."""
    half = n // 2
    out = [(1, half + 1, 0)]
    for level in range(1, max_level + 1):
        width = half >> level
        if width * fs / n < min_width_hz or width < 8:
            break
        step = width // 2
        for k1 in range(0, half - width + 1, step):
            out.append((max(1, k1), k1 + width, level))
    return out


def kurtogram(
    spectra: Spectra, whitened: ComplexArray, min_width_hz: float, max_level: int = 4
) -> list[Band]:
    """Spectral kurtosis of every candidate band, highest first."""
    df = spectra.df
    bands = [
        Band(k1 * df, k2 * df, level, _sk(complex_envelope(whitened, spectra.n, k1, k2)))
        for k1, k2, level in candidate_bands(spectra.n, spectra.fs, min_width_hz, max_level)
    ]
    return sorted(bands, key=lambda b: b.kurtosis, reverse=True)


def envelope_spectrum(
    spectra: Spectra,
    whitened: ComplexArray,
    band: Band,
    method: str,
    max_bin: int | None = None,
) -> EnvelopeSpectrum:
    """Hann-windowed amplitude spectrum of the squared envelope, power-averaged over blocks.

    With `max_bin`, only bins 0..max_bin are returned (the comb statistics never look higher).
    Bin j of the squared-envelope spectrum is the lag-j correlation of the band's K bins, so
    any transform length M >= K + j + 1 gives it without wrap-around: a wide band (the whole
    band: K = n/2) is then demodulated at M ~ K + max_bin instead of 2K, and the result is
    rescaled to the 2K-length convention so amplitudes do not depend on the shortcut.
    """
    df = spectra.df
    k1 = max(1, round(band.lo_hz / df))
    k2 = round(band.hi_hz / df)
    m = spectra.n // _decimation(spectra.n, k2 - k1)
    short = None if max_bin is None else sp_fft.next_fast_len(k2 - k1 + max_bin + 1, real=False)
    if short is not None and short < m:
        z = _baseband(whitened, k1, k2, short)
    else:
        short = None
        z = _baseband(whitened, k1, k2, m)
    # The block was Hann-windowed before whitening, so the squared envelope already carries
    # the w^2 taper: no second window. Remove its weighted mean, keep the taper.
    sq = (z * z.conj()).real
    w2 = _hann_power(sq.shape[1])
    sq -= (sq.sum(axis=1, keepdims=True) / w2.sum()) * w2
    spec = sp_fft.rfft(sq, axis=1)
    if max_bin is not None:
        spec = spec[:, : max_bin + 1]
    values = np.sqrt(np.mean(spec.real**2 + spec.imag**2, axis=0)) * (2.0 / w2.sum())
    if short is not None:
        values *= (short / m) ** 2  # 1/M^2 law of the un-normalised inverse transform
    return EnvelopeSpectrum(method=method, band=band, df=df, values=values)


def _baseband(whitened: ComplexArray, k1: int, k2: int, m: int) -> ComplexArray:
    padded = np.zeros((whitened.shape[0], m), dtype=np.complex128)
    padded[:, : k2 - k1] = whitened[:, k1:k2]
    return sp_fft.ifft(padded, axis=1, overwrite_x=True)
