"""Envelope analysis: a bank of resonance bands, each demodulated into a squared-envelope spectrum.

A local bearing defect makes a train of short impacts that ring a structural resonance; the
repetition rate (BPFO, BPFI, ...) shows in the spectrum of the squared envelope of that band,
not in the raw spectrum (Randall & Antoni, MSSP 25 (2011) 485-520).

Steps, all from the one rFFT per block kept in `Spectra`:

1. Cepstral pre-whitening (X / |X|; Sawalhi & Randall 2011, Borghesani et al. MSSP 36 (2013)):
   removes the discrete lines of shafts, gears and mains and the colouring of the transfer path,
   so impulsive content is not masked by strong periodic content. It is one of the two methods
   Smith & Randall (MSSP 64-65, 2015) found most reliable on the CWRU data.
2. A filter bank in the shape of Antoni's fast kurtogram (MSSP 21 (2007) 108-124): the whole
   band, and at level L bands fs / 2^(L+1) wide overlapping by half. Bands narrower than the
   highest defect line the combs read are left out: an envelope spectrum only reaches its band's
   width. Which band carries the defect is not decided here by spectral kurtosis (it picks bands
   holding the defect lines themselves or impulsive noise); the bearing screening
   (`bearing_screen.py`) tries the combs in every band and pays for it in significance (Smith,
   Fan, Peng, Li & Randall, MSSP 2016; Antoni's infogram, MSSP 2016).
3. Complex envelope of each band: its bins shifted to baseband and inverse-transformed at a
   length M. Bin j of the squared-envelope spectrum is the lag-j correlation of the band's K
   bins, so any M >= K + j + 1 gives the bins the combs read exactly (no wrap-around); a
   decimated length n / d >= 2K is used when that is shorter. Bands of equal width share one
   batched transform.

Values are the squared envelope's modulation depth at each frequency (the line's amplitude over
the band's mean squared envelope), so bands of different widths compare; after whitening the
signal has no physical unit, and what people read is each line's level above the local floor.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft

from detectors.vibration.spectrum import ComplexArray, FloatArray, Spectra

MIN_BAND_BINS = 8


@dataclass(frozen=True, slots=True)
class Band:
    lo_hz: float
    hi_hz: float
    level: int  # 0 = whole band; level L bands are fs / 2^(L+1) wide

    def to_dict(self) -> dict[str, float | int]:
        return {"lo_hz": round(self.lo_hz, 1), "hi_hz": round(self.hi_hz, 1), "level": self.level}

    def describe(self) -> str:
        whole = "whole band" if self.level == 0 else "band"
        return f"{whole} {self.lo_hz:.0f}-{self.hi_hz:.0f} Hz"


@dataclass(frozen=True)
class EnvelopeBank:
    """Squared-envelope spectra of several bands (rows), power-averaged over `blocks` blocks;
    column k is k * df Hz, up to the highest bin the comb statistics read."""

    bands: tuple[Band, ...]
    df: float
    values: FloatArray  # (bands, bins), modulation depth
    blocks: int

    def row(self, band: Band) -> FloatArray:
        return self.values[self.bands.index(band)]


def prewhiten(hann: ComplexArray) -> ComplexArray:
    """Unit magnitude, phase kept: the simplest form of cepstral pre-whitening.

    Takes the Hann-windowed spectrum (`Spectra.hann`): a rectangular block's wrap-around step
    would whiten into a broadband impulse in every band.
    """
    mag = np.abs(hann)
    out = hann / np.maximum(mag, np.finfo(np.float64).tiny)
    out[:, 0] = 0.0
    return out


def filter_bank(n: int, fs: float, min_width_hz: float, max_level: int) -> tuple[Band, ...]:
    """The whole band and every kurtogram-style band at least `min_width_hz` wide."""
    return tuple(
        Band(k1 * fs / n, k2 * fs / n, level)
        for k1, k2, level in _bank_bins(n, fs, min_width_hz, max_level)
    )


@functools.lru_cache(maxsize=32)
def _bank_bins(
    n: int, fs: float, min_width_hz: float, max_level: int
) -> tuple[tuple[int, int, int], ...]:
    half = n // 2
    out = [(0, half + 1, 0)]  # bin 0 is zero after whitening
    for level in range(1, max_level + 1):
        width = half >> level
        if width * fs / n < min_width_hz or width < MIN_BAND_BINS:
            break
        out += [(k1, k1 + width, level) for k1 in range(0, half - width + 1, width // 2)]
    return tuple(out)


def _band_bins(band: Band, df: float) -> tuple[int, int]:
    return round(band.lo_hz / df), round(band.hi_hz / df)


def _decimated_length(n: int, band_bins: int) -> int:
    """n / d for the largest power of two d dividing n with n / d >= 2 * band_bins."""
    d = 1
    while n % (2 * d) == 0 and n // (2 * d) >= 2 * band_bins:
        d *= 2
    return n // d


@functools.lru_cache(maxsize=64)
def _transform_length(n: int, band_bins: int, max_bin: int) -> int:
    # Long enough for lags up to max_bin without wrap-around, and for max_bin + 1 output bins.
    exact = sp_fft.next_fast_len(max(band_bins + max_bin + 1, 2 * max_bin + 2), real=False)
    return min(_decimated_length(n, band_bins), exact) if band_bins > max_bin else exact


@functools.lru_cache(maxsize=32)
def _hann_power(m: int) -> FloatArray:
    """Periodic Hann window squared (cached: the same few lengths recur every block)."""
    w = np.hanning(m + 1)[:-1]
    out = w * w
    out.flags.writeable = False
    return out


def envelope_bank(
    spectra: Spectra, whitened: ComplexArray, bands: tuple[Band, ...], max_bin: int
) -> EnvelopeBank:
    """Squared-envelope spectra (bins 0..max_bin) of `bands`, power-averaged over the blocks."""
    df = spectra.df
    rows = np.empty((len(bands), max_bin + 1))
    groups: dict[int, list[int]] = {}
    for i, band in enumerate(bands):
        k1, k2 = _band_bins(band, df)
        groups.setdefault(k2 - k1, []).append(i)
    for width, members in groups.items():
        starts = np.array([_band_bins(bands[i], df)[0] for i in members])
        m = _transform_length(spectra.n, width, max_bin)
        rows[members] = _squared_envelope_spectra(whitened, starts, width, m, max_bin)
    return EnvelopeBank(bands=bands, df=df, values=rows, blocks=int(whitened.shape[0]))


def _squared_envelope_spectra(
    whitened: ComplexArray, starts: np.ndarray, width: int, m: int, max_bin: int
) -> FloatArray:
    """(len(starts), max_bin + 1) modulation-depth spectra of the bands [s, s + width)."""
    blocks = whitened.shape[0]
    padded = np.zeros((blocks, starts.size, m), dtype=np.complex128)
    padded[:, :, :width] = whitened[:, starts[:, None] + np.arange(width)]
    z = sp_fft.ifft(padded, axis=2, overwrite_x=True, norm="forward")
    sq = z.real * z.real + z.imag * z.imag
    # The block was Hann-windowed before whitening, so the squared envelope already carries
    # the w^2 taper: no second window. Remove its weighted mean, keep the taper.
    w2 = _hann_power(m)
    level = sq.sum(axis=2, keepdims=True) / w2.sum()
    sq -= level * w2
    spec = sp_fft.rfft(sq, axis=2)[:, :, : max_bin + 1]
    # Amplitude of the modulation (w2-weighted) relative to the mean squared envelope.
    depth_sq = (spec.real**2 + spec.imag**2) / np.maximum(level * w2.sum() / 2.0, 1e-300) ** 2
    return np.sqrt(np.mean(depth_sq, axis=0))
