"""Match a comb of defect lines (harmonics and sidebands) in an envelope spectrum.

How sure are we that a comb is not chance? Each line's power is compared with the local median
of the spectrum around it (ratio rho). For Gaussian noise the power of a spectrum averaged over
B independent blocks follows a Gamma(B, 1/B) law (an exponential for B = 1), which gives the
chance p of a bin at least that high; taking the largest of w bins of a search window
multiplies it by w. The lines of a comb are combined by Fisher's method (-2 sum ln p is
chi-square with 2L degrees of freedom) and the result is multiplied by the number of candidate
fundamentals tried inside the slip tolerance (Bonferroni). The same statistics and thresholds
apply to every machine and every record: nothing is tuned per file.

A comb counts as evidence only when at least two of its lines are individually significant
(a lone line could be an electrical or structural tone that happens to fall in the window;
harmonics and sidebands are what make it a bearing's signature).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage, special

from detectors.vibration.envelope import EnvelopeSpectrum
from detectors.vibration.spectrum import FloatArray

LINE_SIGNIFICANT_P = 1e-3  # a line this unlikely under noise counts as seen
RHO_CAP = 1e4  # 40 dB: beyond this a line proves nothing more
MIN_SIGNIFICANT_LINES = 2
_P_FLOOR = 1e-300
_LOG_P_FLOOR = math.log(_P_FLOOR)
_SIGNIFICANT_SCORE = -2.0 * math.log(LINE_SIGNIFICANT_P)


@dataclass(frozen=True, slots=True)
class LineEvidence:
    label: str  # "1x", "2x", "1x-fr", ...
    expected_hz: float
    freq_hz: float
    amplitude: float
    snr_db: float
    p_chance: float

    @property
    def significant(self) -> bool:
        return self.p_chance <= LINE_SIGNIFICANT_P

    def to_dict(self) -> dict[str, object]:
        return {
            "line": self.label,
            "freq_hz": round(self.freq_hz, 2),
            "amplitude_g2": float(f"{self.amplitude:.4g}"),
            "snr_db": round(self.snr_db, 1),
        }


@dataclass(frozen=True)
class CombMatch:
    expected_hz: float
    found_hz: float
    log10_p: float  # chance probability of the whole comb, Bonferroni-corrected
    significant_count: int  # lines individually significant (p <= LINE_SIGNIFICANT_P)
    # Line-by-line evidence is only built for the combs that are reported.
    build_lines: Callable[[], tuple[LineEvidence, ...]] = field(repr=False, compare=False)

    @functools.cached_property
    def lines(self) -> tuple[LineEvidence, ...]:
        return self.build_lines()

    @property
    def significant_lines(self) -> list[LineEvidence]:
        return [line for line in self.lines if line.significant]

    @property
    def is_evidence(self) -> bool:
        return self.significant_count >= MIN_SIGNIFICANT_LINES

    @property
    def deviation_pct(self) -> float:
        return 100.0 * (self.found_hz / self.expected_hz - 1.0)


@dataclass(frozen=True, slots=True)
class CombSpec:
    fundamental_hz: float
    harmonics: int
    sideband_hz: float | None = None  # +-fr for the inner race, +-FTF for a ball


class NormalisedSpectrum:
    """Power ratios of an envelope spectrum to its local median, with the chance law.

    Only the part up to `max_hz` (the highest line any comb will look at) is normalised.
    """

    def __init__(
        self, ses: EnvelopeSpectrum, floor_half_width: int, blocks: float, max_hz: float
    ) -> None:
        keep = min(ses.values.size, int(max_hz / ses.df) + 2 * floor_half_width + 4)
        self.values = ses.values[:keep]
        self.top_hz = (ses.values.size - 2) * ses.df
        power = self.values**2
        self.df = ses.df
        self.size = power.size
        self.floor = _running_median(power, floor_half_width)
        self.rho = power / np.maximum(self.floor, 1e-300)
        # Gamma(B, 1/B) has mean 1; its median turns a ratio-to-median into a ratio-to-mean.
        self.shape = max(1.0, blocks)
        self.median = float(special.gammaincinv(self.shape, 0.5) / self.shape)
        self._max_rho: dict[int, FloatArray] = {}
        self._line_score: dict[tuple[int, ...], FloatArray] = {}

    def max_rho(self, half: int) -> FloatArray:
        """Largest ratio within +-half bins of each bin (cached per half-width)."""
        if half not in self._max_rho:
            self._max_rho[half] = ndimage.maximum_filter1d(self.rho, 2 * half + 1, mode="nearest")
        return self._max_rho[half]

    def line_scores(self, halves: tuple[int, ...]) -> FloatArray:
        """Fisher terms -2 ln p of a line searched in +-h bins around each bin, for each h in
        `halves` (rows); p = min(1, (2h + 1) p_bin(max ratio in the window)), floored at
        1e-300. Computed once per spectrum and shared by every comb and candidate."""
        if halves not in self._line_score:
            rows = []
            for h in halves:
                x = np.minimum(self.max_rho(h), RHO_CAP) * self.median
                if self.shape == 1.0:
                    # Exponential law: ln p_bin = -x, no special function needed.
                    log_p = np.minimum(0.0, math.log(2 * h + 1) - x)
                else:
                    p = np.minimum(1.0, (2 * h + 1) * special.gammaincc(self.shape, self.shape * x))
                    log_p = np.log(np.maximum(p, _P_FLOOR))
                rows.append(-2.0 * np.maximum(log_p, _LOG_P_FLOOR))
            self._line_score[halves] = np.stack(rows)
        return self._line_score[halves]

    def any_line_can_be_significant(self) -> bool:
        """False when no bin stands high enough to make even the narrowest line significant:
        then no comb can hold the two significant lines evidence needs."""
        return bool(np.max(self.line_scores((1,))[0, 1 : self.size - 1]) >= _SIGNIFICANT_SCORE)

    def p_bins(self, rho: FloatArray) -> FloatArray:
        x = np.minimum(rho, RHO_CAP) * self.median
        return np.asarray(special.gammaincc(self.shape, self.shape * x), dtype=np.float64)

    def p_bin(self, rho: float) -> float:
        x = min(rho, RHO_CAP) * self.median
        return float(special.gammaincc(self.shape, self.shape * x))

    def line(
        self, label: str, expected_hz: float, centre_hz: float, half: int
    ) -> LineEvidence | None:
        c = round(centre_hz / self.df)
        lo, hi = max(1, c - half), min(self.size - 2, c + half)
        if hi < lo:
            return None
        k = lo + int(np.argmax(self.rho[lo : hi + 1]))
        rho = float(self.rho[k])
        p = min(1.0, (hi - lo + 1) * self.p_bin(rho))
        return LineEvidence(
            label=label,
            expected_hz=expected_hz,
            freq_hz=k * self.df,
            amplitude=float(self.values[k]),
            snr_db=10.0 * math.log10(max(rho, 1e-12)),
            p_chance=p,
        )


def _running_median(values: FloatArray, half: int) -> FloatArray:
    """Median over +-half bins, computed on a coarse grid and interpolated (it varies slowly)."""
    n = values.size
    step = max(1, half // 4)
    padded = np.pad(values, half, mode="reflect") if n > half else np.pad(values, half, "edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    centres = np.arange(0, n, step)
    # Windows have odd length 2 * half + 1: the median is the middle order statistic.
    meds = np.partition(windows[centres], half, axis=1)[:, half]
    return np.interp(np.arange(n), centres, meds)


def match_comb(
    norm: NormalisedSpectrum,
    spec: CombSpec,
    tol_rel: float,
    exclude_hz: Sequence[float] = (),
) -> CombMatch | None:
    """Best comb within +-tol of the expected fundamental, or None if it does not fit the band.

    Every candidate fundamental (one per bin of the tolerance window) is scored at once with
    array operations; the line-by-line evidence is then built for the winner only.
    """
    df = norm.df
    top_hz = min(norm.top_hz, (norm.size - 2) * df)
    f0 = spec.fundamental_hz
    if f0 * (1 + tol_rel) >= top_hz:
        return None
    k_lo = max(1, math.floor(f0 * (1 - tol_rel) / df))
    k_hi = math.ceil(f0 * (1 + tol_rel) / df)
    fundamentals = np.arange(k_lo, k_hi + 1) * df
    excluded = np.asarray(exclude_hz, dtype=np.float64)
    harmonic, offset = _targets(spec)
    half = 1 + harmonic // 2
    centre = harmonic[:, None] * fundamentals[None, :] + offset[:, None]  # (lines, candidates)
    valid = (centre > 0) & (centre + half[:, None] * df < top_hz)
    if excluded.size:
        valid &= _distance_to_nearest(centre, excluded) > (2 + half[:, None]) * df
    bins = np.clip(np.rint(centre / df).astype(np.int64), 1, norm.size - 2)
    halves = tuple(sorted(set(half.tolist())))
    score = norm.line_scores(halves)[np.searchsorted(halves, half)[:, None], bins]
    score = np.where(valid, score, 0.0)
    stat = np.sum(score, axis=0)
    dof = 2.0 * np.sum(valid, axis=0)
    if not np.any(dof > 0):
        return None
    log10_p = np.where(dof > 0, _chi2_log10_sf(stat, np.maximum(dof, 2.0)), 0.0)
    best = int(np.argmin(log10_p))
    fundamental = float(fundamentals[best])
    corrected = min(0.0, float(log10_p[best]) + math.log10(fundamentals.size))
    significant = int(np.count_nonzero(score[:, best] >= _SIGNIFICANT_SCORE))
    frozen_exclude = tuple(exclude_hz)
    return CombMatch(
        expected_hz=f0,
        found_hz=fundamental,
        log10_p=corrected,
        significant_count=significant,
        build_lines=lambda: tuple(_comb_lines(norm, spec, fundamental, frozen_exclude, top_hz)),
    )


def _distance_to_nearest(values: FloatArray, sorted_ref: FloatArray) -> FloatArray:
    """|v - nearest reference| for every v (the references are few: searchsorted, no cube)."""
    ref = np.sort(sorted_ref)
    pos = np.searchsorted(ref, values)
    left = ref[np.maximum(pos - 1, 0)]
    right = ref[np.minimum(pos, ref.size - 1)]
    return np.minimum(np.abs(values - left), np.abs(values - right))


@functools.lru_cache(maxsize=64)
def _targets(spec: CombSpec) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Harmonic number and offset (Hz) of every line of the comb."""
    offsets = [0.0] if spec.sideband_hz is None else [0.0, -spec.sideband_hz, spec.sideband_hz]
    pairs = [(h, o) for h in range(1, spec.harmonics + 1) for o in offsets]
    return (
        np.array([h for h, _ in pairs], dtype=np.int64),
        np.array([o for _, o in pairs], dtype=np.float64),
    )


def _comb_lines(
    norm: NormalisedSpectrum,
    spec: CombSpec,
    fundamental: float,
    exclude_hz: Sequence[float],
    top_hz: float,
) -> list[LineEvidence]:
    out: list[LineEvidence] = []
    df = norm.df
    guard_hz = 2.0 * df
    excluded = np.asarray(exclude_hz, dtype=np.float64)
    for h in range(1, spec.harmonics + 1):
        # The fundamental is only known to half a bin, so harmonic h may sit h/2 bins off.
        half = 1 + h // 2
        targets = [(f"{h}x", h * fundamental)]
        if spec.sideband_hz is not None:
            targets += [
                (f"{h}x-sb", h * fundamental - spec.sideband_hz),
                (f"{h}x+sb", h * fundamental + spec.sideband_hz),
            ]
        for label, freq in targets:
            if freq <= 0 or freq + half * df >= top_hz:
                continue
            if excluded.size and np.min(np.abs(excluded - freq)) <= guard_hz + half * df:
                continue
            expected = freq * spec.fundamental_hz / fundamental
            line = norm.line(label, expected, freq, half)
            if line is not None:
                out.append(line)
    return out


def _chi2_log10_sf(stat: FloatArray, dof: FloatArray) -> FloatArray:
    """log10 of the chi-square survival function, stable far in the tail (sf ~ 2 pdf)."""
    sf = special.chdtrc(dof, stat)
    k = dof / 2.0
    safe = np.maximum(stat, 1e-300)
    log_pdf = (k - 1) * np.log(safe / 2.0) - stat / 2.0 - special.gammaln(k)
    tail = (log_pdf + math.log(2.0)) / math.log(10.0)
    return np.where(sf > 0, np.log10(np.maximum(sf, 1e-300)), tail)
