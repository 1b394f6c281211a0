"""The envelope bank against a direct computation, and the filter bank's shape."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.vibration.envelope import envelope_bank, filter_bank, prewhiten
from detectors.vibration.spectrum import block_spectra, periodic_hann

FS = 12000.0
N = 16384


def direct_squared_envelope(block: np.ndarray, lo_bin: int, hi_bin: int) -> np.ndarray:
    """Textbook route: analytic signal of the whitened band at full length, |z|^2, its
    spectrum relative to its mean (the taper of the Hann window kept)."""
    x = (block - block.mean()) * periodic_hann(N)
    spectrum = np.fft.rfft(x)
    white = spectrum / np.abs(spectrum)
    one_sided = np.zeros(N, dtype=complex)
    one_sided[lo_bin:hi_bin] = white[lo_bin:hi_bin]
    one_sided[0] = 0.0
    sq = np.abs(np.fft.ifft(one_sided)) ** 2
    w2 = periodic_hann(N) ** 2
    level = sq.sum() / w2.sum()
    return np.abs(np.fft.rfft(sq - level * w2)) / (level * w2.sum() / 2)


@pytest.mark.parametrize("band_index", [0, 1, 5])
def test_bank_rows_equal_the_direct_squared_envelope_on_the_bins_read(band_index: int) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(N) / FS
    # Noise amplitude-modulated at 97 Hz: a line at 97 Hz in every band's envelope.
    x = rng.standard_normal(N) * (1 + 0.5 * np.sin(2 * np.pi * 97.0 * t))
    spectra = block_spectra(x[None, :], FS)
    bands = filter_bank(N, FS, 500.0, 3)
    band = bands[band_index]
    bank = envelope_bank(spectra, prewhiten(spectra.hann), (band,), 700)
    lo, hi = round(band.lo_hz / spectra.df), round(band.hi_hz / spectra.df)
    direct = direct_squared_envelope(x, lo, min(hi, N // 2 + 1))
    assert bank.values.shape == (1, 701)
    np.testing.assert_allclose(bank.values[0], direct[:701], rtol=1e-6, atol=1e-9)
    line = round(97.0 / spectra.df)
    assert bank.values[0, line] > 10 * np.median(bank.values[0, 100:700])


def test_filter_bank_halves_the_width_per_level_and_skips_bands_too_narrow() -> None:
    bands = filter_bank(N, FS, 500.0, 4)
    assert bands[0].level == 0 and bands[0].hi_hz == pytest.approx(FS / 2, rel=1e-3)
    by_level: dict[int, list] = {}
    for b in bands:
        by_level.setdefault(b.level, []).append(b)
    # Level L: width fs / 2^(L+1), half overlap -> 2^(L+1) - 1 bands; level 4 (375 Hz) is
    # narrower than the 500 Hz asked for.
    assert {lv: len(bs) for lv, bs in by_level.items()} == {0: 1, 1: 3, 2: 7, 3: 15}
    for lv, bs in by_level.items():
        if lv:
            assert all(b.hi_hz - b.lo_hz == pytest.approx(FS / 2 ** (lv + 1)) for b in bs)
