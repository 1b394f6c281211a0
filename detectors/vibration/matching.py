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
    """Best comb within +-tol of the expected fundamental, or None if it does not fit the band."""
    return match_combs(norm, (spec,), tol_rel, exclude_hz)[0]


def match_combs(
    norm: NormalisedSpectrum,
    specs: Sequence[CombSpec],
    tol_rel: float,
    exclude_hz: Sequence[float] = (),
    table: CombTable | None = None,
) -> list[CombMatch | None]:
    """`match_comb` of several combs on one spectrum, all scored in one set of array operations.

    `table` (from `CombTable.build` with the same combs, tolerance and exclusions, for a
    spectrum of the same resolution and reach) may be shared by several spectra.
    """
    if table is None or not table.fits(norm):
        table = CombTable.build(norm.df, norm.size, norm.top_hz, specs, tol_rel, exclude_hz)
    return table.score(norm, specs)


@dataclass(frozen=True)
class CombTable:
    """Where every line of every candidate comb falls, independent of the spectrum's values.

    Every candidate fundamental of every comb (one per bin of its tolerance window) is a column
    of one (lines, candidates) table; combs with fewer lines are padded with invalid lines,
    which add exact zeros, so each column's statistic is the one the comb alone would get.
    """

    df: float
    size: int
    top_hz: float
    fitting: tuple[int, ...]  # indices of the combs whose fundamental fits the spectrum
    spans: tuple[int, ...]  # candidate count of each fitting comb (its columns, in order)
    fundamentals: FloatArray  # (candidates,)
    bins: npt.NDArray[np.int64]  # (lines, candidates) bin of each line
    valid: npt.NDArray[np.bool_]  # line inside the band, present, not excluded
    halves: tuple[int, ...]  # search half-widths used (rows of `line_scores`)
    row_of_half: npt.NDArray[np.int64]  # (lines, candidates) row of each line's half-width
    exclude_hz: tuple[float, ...]
    dof: FloatArray = field(init=False)  # chi-square degrees of freedom (2 per valid line, >= 2)
    has_lines: npt.NDArray[np.bool_] = field(init=False)  # candidate has at least one line

    def __post_init__(self) -> None:
        lines = np.sum(self.valid, axis=0)
        object.__setattr__(self, "dof", np.maximum(2.0 * lines, 2.0))
        object.__setattr__(self, "has_lines", lines > 0)

    def fits(self, norm: NormalisedSpectrum) -> bool:
        return (
            norm.df == self.df
            and norm.size == self.size
            and min(norm.top_hz, (norm.size - 2) * norm.df) == self.top_hz
        )

    @staticmethod
    def build(
        df: float,
        size: int,
        spectrum_top_hz: float,
        specs: Sequence[CombSpec],
        tol_rel: float,
        exclude_hz: Sequence[float] = (),
    ) -> CombTable:
        top_hz = min(spectrum_top_hz, (size - 2) * df)
        fitting = [i for i, sp in enumerate(specs) if sp.fundamental_hz * (1 + tol_rel) < top_hz]
        chosen = [specs[i] for i in fitting]
        if not chosen:
            empty_i = np.zeros((0, 0), dtype=np.int64)
            return CombTable(
                df, size, top_hz, (), (), np.zeros(0), empty_i, empty_i.astype(bool), (1,),
                empty_i, tuple(exclude_hz),
            )  # fmt: skip
        harmonic_rows, sign_rows, present_rows = _layout(
            tuple((sp.harmonics, sp.sideband_hz is not None) for sp in chosen)
        )
        k_lo = [max(1, math.floor(sp.fundamental_hz * (1 - tol_rel) / df)) for sp in chosen]
        spans = [
            math.ceil(sp.fundamental_hz * (1 + tol_rel) / df) - lo + 1
            for sp, lo in zip(chosen, k_lo, strict=True)
        ]
        starts = np.cumsum([0, *spans[:-1]])
        comb_of_col = np.repeat(np.arange(len(chosen)), spans)
        fundamentals = (np.arange(sum(spans)) + np.repeat(np.asarray(k_lo) - starts, spans)) * df
        sidebands = np.array([sp.sideband_hz or 0.0 for sp in chosen])
        harmonic = harmonic_rows[:, comb_of_col]
        present = present_rows[:, comb_of_col]
        half = 1 + harmonic // 2
        centre = harmonic * fundamentals + (sign_rows * sidebands)[:, comb_of_col]
        valid = present & (centre > 0) & (centre + half * df < top_hz)
        excluded = np.asarray(exclude_hz, dtype=np.float64)
        if excluded.size:
            valid &= _distance_to_nearest(centre, excluded) > (2 + half) * df
        halves = tuple(sorted(set(half[present].tolist())))
        return CombTable(
            df=df,
            size=size,
            top_hz=top_hz,
            fitting=tuple(fitting),
            spans=tuple(spans),
            fundamentals=fundamentals,
            bins=np.clip(np.rint(centre / df).astype(np.int64), 1, size - 2),
            valid=valid,
            halves=halves,
            row_of_half=np.searchsorted(halves, np.minimum(half, halves[-1])),
            exclude_hz=tuple(exclude_hz),
        )

    def score(self, norm: NormalisedSpectrum, specs: Sequence[CombSpec]) -> list[CombMatch | None]:
        """Best candidate of each comb on `norm`, Bonferroni-corrected for its candidates."""
        out: list[CombMatch | None] = [None] * len(specs)
        if not self.fitting:
            return out
        score = norm.line_scores(self.halves)[self.row_of_half, self.bins]
        score = np.where(self.valid, score, 0.0)
        stat = np.sum(score, axis=0)
        log10_p = np.where(self.has_lines, _chi2_log10_sf(stat, self.dof), 0.0)
        # Per comb, pick the best of its few columns in plain Python (a handful of values
        # each: cheaper than one more round of array calls per comb).
        log10_list = log10_p.tolist()
        has_lines = self.has_lines.tolist()
        significant = np.count_nonzero(score >= _SIGNIFICANT_SCORE, axis=0).tolist()
        first = 0
        for i, span in zip(self.fitting, self.spans, strict=True):
            cols = range(first, first + span)
            first += span
            if not any(has_lines[c] for c in cols):
                continue
            best = min(cols, key=log10_list.__getitem__)  # the first of equal minima
            fundamental = float(self.fundamentals[best])
            out[i] = CombMatch(
                expected_hz=specs[i].fundamental_hz,
                found_hz=fundamental,
                log10_p=min(0.0, log10_list[best] + math.log10(span)),
                significant_count=int(significant[best]),
                build_lines=functools.partial(
                    _comb_line_tuple, norm, specs[i], fundamental, self.exclude_hz, self.top_hz
                ),
            )
        return out


def _comb_line_tuple(
    norm: NormalisedSpectrum,
    spec: CombSpec,
    fundamental: float,
    exclude_hz: Sequence[float],
    top_hz: float,
) -> tuple[LineEvidence, ...]:
    return tuple(_comb_lines(norm, spec, fundamental, exclude_hz, top_hz))


def _distance_to_nearest(values: FloatArray, sorted_ref: FloatArray) -> FloatArray:
    """|v - nearest reference| for every v (the references are few: searchsorted, no cube)."""
    ref = np.sort(sorted_ref)
    pos = np.searchsorted(ref, values)
    left = ref[np.maximum(pos - 1, 0)]
    right = ref[np.minimum(pos, ref.size - 1)]
    return np.minimum(np.abs(values - left), np.abs(values - right))


@functools.lru_cache(maxsize=64)
def _layout(
    shapes: tuple[tuple[int, bool], ...],
) -> tuple[npt.NDArray[np.int64], FloatArray, npt.NDArray[np.bool_]]:
    """(lines, combs) harmonic numbers, sideband signs (-1, 0, +1) and presence of the combs
    of the given (harmonics, has sidebands) shapes, shorter combs padded with absent lines
    (harmonic 1, so every derived quantity stays finite)."""
    rows = max(h * (3 if sb else 1) for h, sb in shapes)
    harmonic = np.ones((rows, len(shapes)), dtype=np.int64)
    sign = np.zeros((rows, len(shapes)))
    present = np.zeros((rows, len(shapes)), dtype=bool)
    for j, (harmonics, has_sidebands) in enumerate(shapes):
        signs = (0.0, -1.0, 1.0) if has_sidebands else (0.0,)
        pairs = [(h, sg) for h in range(1, harmonics + 1) for sg in signs]
        harmonic[: len(pairs), j] = [h for h, _ in pairs]
        sign[: len(pairs), j] = [sg for _, sg in pairs]
        present[: len(pairs), j] = True
    for array in (harmonic, sign, present):
        array.flags.writeable = False
    return harmonic, sign, present


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
    if np.all(sf > 0):  # the usual case: no need for the tail formula
        return np.asarray(np.log10(np.maximum(sf, 1e-300)), dtype=np.float64)
    k = dof / 2.0
    safe = np.maximum(stat, 1e-300)
    log_pdf = (k - 1) * np.log(safe / 2.0) - stat / 2.0 - special.gammaln(k)
    tail = (log_pdf + math.log(2.0)) / math.log(10.0)
    return np.where(sf > 0, np.log10(np.maximum(sf, 1e-300)), tail)
