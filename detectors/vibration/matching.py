"""Score combs of defect harmonics in a bank of envelope spectra.

How sure are we that a comb is not chance? Each line's power is compared with the local median
of its spectrum (ratio rho). One block's periodogram bin of Gaussian noise is exponential, so
the chance that a bin stands rho times above the median is 2^-rho; the largest of the w bins of
a search window has at most w times that chance. The same law is used for spectra averaged
over several blocks, where it is an upper bound (an average of B blocks has a lighter,
Gamma(B) tail), and deliberately so: averaging makes a real line's ratio steadier, so a line
near the threshold is seen in more analyses, but it does not lower the threshold. A long
average would otherwise turn every weak real line into evidence -- the ball-pass modulation
every loaded bearing shows (varying compliance), electrical and structural tones -- and the
daemon (one block per analysis by default) and `analyze` (a whole record averaged) would
disagree. The harmonics of a comb are combined by Fisher's method (-2 sum ln p is chi-square
with 2L degrees of freedom), and the result is multiplied by the number of candidate
fundamentals tried (Bonferroni); `bearing_screen.py` adds the bands and combs tried.

Only the harmonics of the carrier line score and decide; sidebands are measured for the
evidence (`sideband_lines`) and never make a call. The candidate fundamentals are the bins
inside the stated slip tolerance (no extra bin from rounding), and each harmonic's search
window stays inside h times that tolerance.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from detectors.vibration.spectrum import FloatArray

LINE_SIGNIFICANT_P = 1e-3  # a line this unlikely under noise counts as seen
RHO_CAP = 1e4  # 40 dB: beyond this a line proves nothing more
LN2 = math.log(2.0)
_LOG_P_FLOOR = math.log(1e-300)
_LOG_SIGNIFICANT = math.log(LINE_SIGNIFICANT_P)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CombSpec:
    fundamental_hz: float  # kinematic carrier line
    harmonics: int
    sideband_hz: float | None = None  # +-fr for the inner race, +-FTF for a ball


@dataclass(frozen=True, slots=True)
class LineEvidence:
    label: str  # "1x", "2x", "1x-sb", ...
    expected_hz: float  # kinematic frequency of this line
    freq_hz: float  # where it was found
    level_db: float  # power above the local floor (median)
    p_chance: float  # chance of a line at least this high in its window under noise

    @property
    def significant(self) -> bool:
        return self.p_chance <= LINE_SIGNIFICANT_P

    def to_dict(self) -> dict[str, object]:
        return {
            "line": self.label,
            "freq_hz": round(self.freq_hz, 2),
            "expected_hz": round(self.expected_hz, 2),
            "level_db": round(self.level_db, 1),
            "significant": self.significant,
        }


class FloorRatios:
    """Power ratios of a stack of envelope spectra (rows) to their running median."""

    def __init__(self, values: FloatArray, floor_half_width: int, df: float) -> None:
        power = values * values
        self.df = df
        self.floor_half_width = floor_half_width
        floor = np.maximum(_running_median(power, floor_half_width), 1e-300)
        self.rho = np.minimum(power / floor, RHO_CAP)
        self.rows, self.size = self.rho.shape

    def any_line_can_be_significant(self) -> bool:
        """False when no bin stands high enough to make even a one-bin line significant: then
        no comb can hold the two significant harmonics evidence needs (exact shortcut)."""
        return bool(np.max(self.rho[:, 1:-1]) * LN2 >= -_LOG_SIGNIFICANT)

    def line(
        self, row: int, label: str, expected_hz: float, df: float, lo: int, hi: int
    ) -> LineEvidence | None:
        lo, hi = max(1, lo), min(self.size - 2, hi)
        if hi < lo:
            return None
        k = lo + int(np.argmax(self.rho[row, lo : hi + 1]))
        rho = float(self.rho[row, k])
        return LineEvidence(
            label=label,
            expected_hz=expected_hz,
            freq_hz=k * df,
            level_db=10.0 * math.log10(max(rho, 1e-12)),
            p_chance=min(1.0, (hi - lo + 1) * 2.0 ** (-rho)),
        )


def _running_median(values: FloatArray, half: int) -> FloatArray:
    """Median over +-half bins along each row, computed on a coarse grid and interpolated (it
    varies slowly)."""
    n = values.shape[1]
    step = max(1, half // 2)
    if n > half:
        padded = np.pad(values, ((0, 0), (half, half)), mode="reflect")
    else:
        padded = np.pad(values, ((0, 0), (half, half)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=1)
    centres = np.arange(0, n, step)
    # Windows have odd length 2 * half + 1: the median is the middle order statistic.
    meds = np.partition(windows[:, ::step], half, axis=2)[:, :, half]
    if step == 1:
        return np.ascontiguousarray(meds)
    # Linear interpolation between the grid's medians (every row at once), flat past the last.
    meds = np.concatenate([meds, meds[:, -1:]], axis=1)
    grid = np.arange(n)
    left = grid // step
    frac = (grid - centres[np.minimum(left, centres.size - 1)]) / step
    last = centres[-1]
    frac = np.where(grid > last, 0.0, frac)
    left = np.minimum(left, centres.size - 1)
    return meds[:, left] * (1.0 - frac) + meds[:, left + 1] * frac


def tolerance_bins(freq_hz: float, tol_rel: float, df: float) -> tuple[int, int]:
    """First and last bin whose frequency lies inside freq * (1 -+ tol)."""
    # The 1e-9 keeps a bin lying exactly on the edge inside despite rounding.
    lo = math.ceil(freq_hz * (1 - tol_rel) / df - 1e-9)
    return lo, math.floor(freq_hz * (1 + tol_rel) / df + 1e-9)


def harmonic_half_width(h: int) -> int:
    """Search half-width (bins) of harmonic h around h x candidate: the candidate is only known
    to half a bin, and speed wander smears the higher harmonics."""
    return 1 + h // 2


@dataclass(frozen=True)
class CombTable:
    """Where every harmonic of every candidate fundamental of every comb falls.

    Columns are candidates (the bins inside each comb's tolerance, comb after comb), rows the
    harmonics; each line's window is a run of up to `width` bins. Independent of the values, so
    one table serves every band of a bank.
    """

    df: float
    size: int
    specs: tuple[CombSpec, ...]
    tol_rel: float
    spans: tuple[int, ...]  # candidates per comb (0: the tolerance holds no bin)
    fundamentals: FloatArray  # (candidates,) Hz
    index: IntArray  # (harmonics, candidates, width) bins of each window (clipped)
    in_window: BoolArray  # (harmonics, candidates, width)
    log_width: FloatArray  # (harmonics, candidates) ln of the window's bin count
    valid: BoolArray  # (harmonics, candidates) line inside the spectrum, not excluded
    dof: FloatArray  # (candidates,) 2 per valid harmonic (at least 2)
    exclude_hz: tuple[float, ...]

    @staticmethod
    def build(
        df: float,
        size: int,
        specs: Sequence[CombSpec],
        tol_rel: float,
        exclude_hz: Sequence[float] = (),
    ) -> CombTable:
        """Cached: a live channel at a steady speed asks for the same table every block."""
        return _build_table(
            df, size, tuple(specs), tol_rel, tuple(float(x) for x in exclude_hz)
        )

    def score(self, ratios: FloorRatios) -> list[CombScore | None]:
        """Best candidate of each comb in each row (band) of `ratios`."""
        out: list[CombScore | None] = []
        if self.fundamentals.size == 0:
            return [None] * len(self.specs)
        gathered = ratios.rho[:, self.index]  # (bands, harmonics, candidates, width)
        best_rho = np.max(np.where(self.in_window, gathered, 0.0), axis=3)
        log_p = np.minimum(0.0, self.log_width - LN2 * best_rho)
        log_p = np.where(self.valid, np.maximum(log_p, _LOG_P_FLOOR), 0.0)
        stat = -2.0 * np.sum(log_p, axis=1)  # (bands, candidates)
        log10_p = np.where(self.valid.any(axis=0), _chi2_log10_sf(stat, self.dof), 0.0)
        significant = np.count_nonzero(log_p <= _LOG_SIGNIFICANT, axis=1)
        first = 0
        for i, span in enumerate(self.spans):
            cols = slice(first, first + span)
            first += span
            if span == 0 or not self.valid[:, cols].any():
                out.append(None)
                continue
            best = np.argmin(log10_p[:, cols], axis=1)  # the first of equal minima
            rows = np.arange(ratios.rows)
            out.append(
                CombScore(
                    table=self,
                    comb=i,
                    columns=best + cols.start,
                    log10_p=np.minimum(0.0, log10_p[:, cols][rows, best] + math.log10(span)),
                    significant=significant[:, cols][rows, best],
                )
            )
        return out


@dataclass(frozen=True)
class CombScore:
    """One comb's best candidate in every band of a bank (arrays indexed by band)."""

    table: CombTable
    comb: int
    columns: IntArray  # best candidate column per band
    log10_p: FloatArray  # harmonics' chance, corrected for the candidates tried
    significant: IntArray  # significant harmonics at that candidate

    @property
    def spec(self) -> CombSpec:
        return self.table.specs[self.comb]

    def found_hz(self, row: int) -> float:
        return float(self.table.fundamentals[self.columns[row]])

    def harmonic_lines(self, ratios: FloorRatios, row: int) -> list[LineEvidence]:
        """Each valid harmonic of the best candidate in band `row`, as measured."""
        t = self.table
        col = int(self.columns[row])
        out = []
        for h in range(1, self.spec.harmonics + 1):
            if not t.valid[h - 1, col]:
                continue
            lo = int(t.index[h - 1, col, 0])
            hi = int(t.index[h - 1, col, -1])
            line = ratios.line(row, f"{h}x", h * self.spec.fundamental_hz, t.df, lo, hi)
            if line is not None:
                out.append(line)
        return out

    def sideband_lines(self, ratios: FloorRatios, row: int) -> list[LineEvidence]:
        """The +-sideband of each harmonic (supporting evidence only), same windows shifted."""
        spacing = self.spec.sideband_hz
        if spacing is None:
            return []
        t = self.table
        col = int(self.columns[row])
        found = float(t.fundamentals[col])
        excluded = np.sort(np.asarray(t.exclude_hz, dtype=np.float64))
        out = []
        for h in range(1, self.spec.harmonics + 1):
            half = harmonic_half_width(h)
            for sign, tag in ((-1, "-sb"), (1, "+sb")):
                centre = h * found + sign * spacing
                expected = h * self.spec.fundamental_hz + sign * spacing
                if centre <= 0 or centre / t.df + half > ratios.size - 2:
                    continue
                if excluded.size and _distance(centre, excluded) <= (2 + half) * t.df:
                    continue
                t_lo, t_hi = tolerance_bins(h * self.spec.fundamental_hz, t.tol_rel, t.df)
                shift = round(sign * spacing / t.df)
                c = round(centre / t.df)
                lo, hi = max(c - half, t_lo + shift), min(c + half, t_hi + shift)
                line = ratios.line(row, f"{h}x{tag}", expected, t.df, lo, hi)
                if line is not None:
                    out.append(line)
        return out


def _distance(value: float, sorted_ref: FloatArray) -> float:
    pos = int(np.searchsorted(sorted_ref, value))
    near = sorted_ref[max(pos - 1, 0) : pos + 1]
    return float(np.min(np.abs(near - value)))


def _chi2_log10_sf(stat: FloatArray, dof: FloatArray) -> FloatArray:
    """log10 of the chi-square survival function, stable far in the tail (sf ~ 2 pdf)."""
    sf = special.chdtrc(dof, stat)
    if np.all(sf > 0):  # the usual case: no need for the tail formula
        return np.asarray(np.log10(np.maximum(sf, 1e-300)), dtype=np.float64)
    k = dof / 2.0
    safe = np.maximum(stat, 1e-300)
    log_pdf = (k - 1) * np.log(safe / 2.0) - stat / 2.0 - special.gammaln(k)
    tail = (log_pdf + math.log(2.0)) / math.log(10.0)
    return np.where(sf > 0, np.log10(np.maximum(sf, 1e-300)), tail)


@functools.lru_cache(maxsize=64)
def _build_table(
    df: float,
    size: int,
    specs: tuple[CombSpec, ...],
    tol_rel: float,
    exclude_hz: tuple[float, ...],
) -> CombTable:
    rows = max((s.harmonics for s in specs), default=1)
    width = 2 * harmonic_half_width(rows) + 1
    top = size - 2
    spans = []
    first_bins = []
    for spec in specs:
        k_lo, k_hi = tolerance_bins(spec.fundamental_hz, tol_rel, df)
        k_lo = max(k_lo, 1)
        spans.append(max(0, k_hi - k_lo + 1))
        first_bins.append(k_lo)
    comb = np.repeat(np.arange(len(specs)), spans)  # comb of each candidate column
    starts = np.repeat(np.cumsum([0, *spans[:-1]]), spans)
    k = np.repeat(first_bins, spans) + (np.arange(comb.size) - starts)  # candidate bins
    h = np.arange(1, rows + 1)[:, None]  # harmonic of each row
    half = 1 + h // 2  # harmonic_half_width, vectorised
    f0 = np.array([s.fundamental_hz for s in specs])[comb]
    # Harmonic h's window: around h x candidate, inside h x the tolerance, inside the spectrum.
    t_lo = np.ceil(h * f0 * (1 - tol_rel) / df - 1e-9).astype(np.int64)
    t_hi = np.floor(h * f0 * (1 + tol_rel) / df + 1e-9).astype(np.int64)
    centre = h * k
    lo = np.maximum(np.maximum(centre - half, t_lo), 1)
    hi = np.minimum(np.minimum(centre + half, t_hi), top)
    harmonics = np.array([s.harmonics for s in specs], dtype=np.int64)[comb]
    valid = (h <= harmonics) & (lo <= hi) & (centre + half <= top)
    if exclude_hz:
        excluded = np.sort(np.asarray(exclude_hz))
        pos = np.searchsorted(excluded, centre * df)
        left = excluded[np.maximum(pos - 1, 0)]
        right = excluded[np.minimum(pos, excluded.size - 1)]
        distance = np.minimum(np.abs(centre * df - left), np.abs(centre * df - right))
        valid &= distance > (2 + half) * df
    lo = np.minimum(lo, top)
    hi = np.maximum(lo, hi)
    index = lo[:, :, None] + np.arange(width)
    in_window = index <= hi[:, :, None]
    index = np.minimum(index, hi[:, :, None])
    for array in (index, in_window, valid):
        array.flags.writeable = False
    return CombTable(
        df=df,
        size=size,
        specs=specs,
        tol_rel=tol_rel,
        spans=tuple(spans),
        fundamentals=k * df,
        index=index,
        in_window=in_window,
        log_width=np.log(hi - lo + 1.0),
        valid=valid,
        dof=np.maximum(2.0 * valid.sum(axis=0), 2.0),
        exclude_hz=exclude_hz,
    )
