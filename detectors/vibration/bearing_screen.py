"""The bearing decision: which defect, if any, the envelope bank shows (one path for `analyze`
and the daemon).

Rules, each for a reason a technician would accept:

- Evidence is the carrier line's harmonics: a fault is called only on at least two individually
  significant harmonics of BPFO, BPFI, BSF or FTF (three for FTF, below shaft speed, where belt
  and slip lines live). Sidebands (shaft rate for the inner race, cage rate for a ball) are
  measured and shown; they never make a call: the +-fr sidebands of one defect are the
  harmonics of nothing, but they fall near the lines of others.
- Every comb is tried in every band of the bank, so the chance of the best one is multiplied by
  the number of bands and combs tried (Bonferroni, on top of the candidate fundamentals inside
  the slip tolerance, matching.py). The band is the one the diagnosis chose, and the report
  names it.
- Explaining away: the strongest comb that passes is accepted first; the lines its defect
  explains -- its harmonics with their shaft-rate (and for a ball, cage-rate) sidebands, the
  lattice a modulated impact train makes -- are taken out of the other combs, which are then
  scored again. For the 6205's nine balls, for instance, 3 x BPFO lies 0.7 % from 2 x BPFI and
  4 x BSF 0.1 % from BPFI + 4 fr: without this, every race fault would also "find" another.
- One location per bearing: a comb that still passes after explaining away is reported in
  `withheld`, not called. Seeded-fault rigs never hold two locations, and on natural faults the
  first location found already sends the technician to change the bearing; a second location
  called on the first one's echoes would send him to look for damage that is not there.
- Dominance: the strongest significant line of the call's band, shaft orders aside, must be a
  harmonic of the called carrier or a first-order sideband of its own modulation. A stronger
  line the defect does not explain means the envelope is driven by something the kinematics
  do not describe -- most often the right defect pushed out of its tolerance by a wrong speed
  or sample rate, whose lattice then lands on another location's comb (bench/vibration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.vibration.bearing import DefectFrequencies
from detectors.vibration.envelope import Band, EnvelopeBank
from detectors.vibration.matching import (
    LINE_SIGNIFICANT_P,
    CombScore,
    CombSpec,
    CombTable,
    FloorRatios,
    IntArray,
    LineEvidence,
    harmonic_half_width,
    tolerance_bins,
)
from detectors.vibration.spectrum import FloatArray
from gateway.core.records import FaultCode

BEARING_CODES = (
    FaultCode.BEARING_OUTER_RACE,
    FaultCode.BEARING_INNER_RACE,
    FaultCode.BEARING_ROLLING_ELEMENT,
    FaultCode.BEARING_CAGE,
)
CARRIER_NAME = {
    FaultCode.BEARING_OUTER_RACE: "BPFO",
    FaultCode.BEARING_INNER_RACE: "BPFI",
    FaultCode.BEARING_ROLLING_ELEMENT: "BSF",
    FaultCode.BEARING_CAGE: "FTF",
}
SIDEBAND_NAME = {
    FaultCode.BEARING_INNER_RACE: "shaft rate",
    FaultCode.BEARING_ROLLING_ELEMENT: "cage rate (FTF)",
}
MIN_HARMONICS = 2
MIN_HARMONICS_BELOW_SHAFT = 3
# Orders of the shaft-rate (and cage-rate) modulation whose sidebands an accepted defect
# explains. The load zone turns an inner-race defect's impacts on and off once per revolution:
# the modulation is pulse-like, its spectrum reaches several orders of fr (Randall & Antoni
# 2011, fig. 6); +-4 covers what a load zone of +-60..90 degrees puts above the floor.
EXPLAINED_MODULATION_ORDERS = 4
SHAFT_GUARD_BINS = 3
CAGE_LINES_OF_A_BALL = 3  # FTF, 2 FTF, 3 FTF: the cage comb's own length
# A one-bin line this far above the median is significant (2^-rho <= LINE_SIGNIFICANT_P).
SIGNIFICANT_ONE_BIN_RATIO = -math.log2(LINE_SIGNIFICANT_P)


@dataclass(frozen=True, slots=True)
class Trials:
    bands: int
    combs: int
    candidates: int

    @property
    def log10(self) -> float:
        return math.log10(self.bands * self.combs)


@dataclass(frozen=True)
class BearingCall:
    """A comb that passed: its band, the harmonics that decided, the supporting sidebands."""

    code: FaultCode
    confidence: float
    log10_p: float  # chance of the harmonics, corrected for every candidate, band and comb
    band: Band
    expected_hz: float
    found_hz: float
    harmonics: tuple[LineEvidence, ...]
    sidebands: tuple[LineEvidence, ...]
    sideband_hz: float | None
    trials: Trials
    tolerance: float

    @property
    def deviation_pct(self) -> float:
        return 100.0 * (self.found_hz / self.expected_hz - 1.0)

    @property
    def deciding(self) -> list[LineEvidence]:
        return [line for line in self.harmonics if line.significant]

    def evidence(self, defect: DefectFrequencies) -> dict[str, Any]:
        deciding = self.deciding
        strongest = max(deciding, key=lambda ln: ln.level_db)
        out: dict[str, Any] = {
            "defect_line": CARRIER_NAME[self.code],
            "expected_hz": round(self.expected_hz, 2),
            "matched_hz": round(self.found_hz, 2),
            "deviation_pct": round(self.deviation_pct, 2),
            "tolerance_pct": round(100.0 * self.tolerance, 1),
            "harmonics": [int(ln.label[:-1]) for ln in deciding],
            "harmonic_lines": [ln.to_dict() for ln in self.harmonics],
            "snr_db": round(strongest.level_db, 1),
            "sidebands": sum(1 for ln in self.sidebands if ln.significant),
            "sideband_lines": [ln.to_dict() for ln in self.sidebands],
            "log10_p_chance": round(self.log10_p, 1),
            "trials": {
                "bands": self.trials.bands,
                "combs": self.trials.combs,
                "candidates": self.trials.candidates,
            },
            "band_hz": [round(self.band.lo_hz, 1), round(self.band.hi_hz, 1)],
            "band_level": self.band.level,
            "shaft_hz": round(defect.shaft, 3),
        }
        if self.sideband_hz is not None:
            out["sideband_spacing"] = SIDEBAND_NAME[self.code]
            out["sideband_spacing_hz"] = round(self.sideband_hz, 2)
        return out


@dataclass(frozen=True)
class BearingScreen:
    calls: list[BearingCall]  # at most one: the location called
    confidences: dict[FaultCode, float]  # every comb, after explaining away
    best_bands: dict[FaultCode, Band]  # where each comb scored best (first pass)
    withheld: list[BearingCall] = field(default_factory=list)  # passed, another location first
    # Passed, but the band's strongest line is not theirs: not called.
    not_dominant: list[BearingCall] = field(default_factory=list)
    # Combs whose slip tolerance holds no bin at this resolution: not tested.
    untestable: list[FaultCode] = field(default_factory=list)


def comb_specs(
    defect: DefectFrequencies, race: int, ball: int, cage: int
) -> dict[FaultCode, CombSpec]:
    return {
        FaultCode.BEARING_OUTER_RACE: CombSpec(defect.bpfo, race),
        # Inner race: the defect turns with the shaft through the load zone -> +-fr sidebands.
        FaultCode.BEARING_INNER_RACE: CombSpec(defect.bpfi, race, defect.shaft),
        # Ball: harmonics of BSF (2 x BSF when it strikes both races), carried through the
        # load zone by the cage -> +-FTF sidebands.
        FaultCode.BEARING_ROLLING_ELEMENT: CombSpec(defect.bsf, ball, defect.ftf),
        FaultCode.BEARING_CAGE: CombSpec(defect.ftf, cage),
    }


def highest_line_hz(specs: dict[FaultCode, CombSpec], tol: float) -> float:
    """The highest envelope line any comb looks at (with its sidebands and tolerance)."""
    top = max(s.harmonics * s.fundamental_hz + (s.sideband_hz or 0.0) for s in specs.values())
    return top * (1 + tol)


def floor_half_width(defect: DefectFrequencies, df: float) -> int:
    """Half-width (bins) of the running median that is an envelope line's noise floor."""
    return max(10, round(defect.shaft / df))


def reach_bins(
    specs: dict[FaultCode, CombSpec], defect: DefectFrequencies, tol: float, df: float
) -> int:
    """Highest envelope bin the screening reads: top line plus the floor's reach."""
    return int(highest_line_hz(specs, tol) / df) + 2 * floor_half_width(defect, df) + 4


def confidence_from_log10_p(log10_p: float) -> float:
    """0 at p = 1e-2, 0.5 at p = 1e-4, each further factor 100 halves the doubt."""
    surprise = -log10_p
    return 0.0 if surprise <= 2.0 else float(1.0 - 2.0 ** (-(surprise - 2.0) / 2.0))


def lattice(
    code: FaultCode,
    found_hz: float,
    defect: DefectFrequencies,
    top_hz: float,
    orders: int,
    *,
    shaft_modulation: bool = True,
    cage_lines: bool = True,
) -> tuple[FloatArray, IntArray]:
    """Lines a defect with carrier `found_hz` makes, with the harmonic each belongs to: its
    harmonics up to `top_hz`, each with the +-1..orders sidebands of its modulation: cage
    rate for a ball (the cage carries it through the load zone, which also puts the first cage
    harmonics in the envelope), shaft rate for the inner race and, with `shaft_modulation`,
    for every other defect (unbalance and runout modulate the load at fr); none for the cage.
    """
    own = {
        FaultCode.BEARING_INNER_RACE: [defect.shaft],
        FaultCode.BEARING_ROLLING_ELEMENT: [defect.ftf],
    }.get(code, [])
    shaft = [defect.shaft] if shaft_modulation and code is not FaultCode.BEARING_CAGE else []
    spacings = list(dict.fromkeys(own + shaft))
    steps = [m * s for s in spacings for m in range(-orders, orders + 1) if m] + [0.0]
    freqs: list[float] = []
    harmonic: list[int] = []
    for h in range(1, int(top_hz / found_hz) + 2):
        freqs += [h * found_hz + step for step in steps]
        harmonic += [h] * len(steps)
    if cage_lines and code is FaultCode.BEARING_ROLLING_ELEMENT:
        cage = list(range(1, CAGE_LINES_OF_A_BALL + 1))
        freqs += [k * defect.ftf for k in cage]
        harmonic += [1] * len(cage)
    f = np.asarray(freqs)
    keep = f > 0
    return f[keep], np.asarray(harmonic, dtype=np.int64)[keep]


def explained_lines(
    code: FaultCode,
    found_hz: float,
    deciding: list[LineEvidence],
    defect: DefectFrequencies,
    top_hz: float,
) -> list[float]:
    """What an accepted defect explains, taken out of the other combs: its lattice with
    `EXPLAINED_MODULATION_ORDERS` sidebands, and its deciding harmonics where they were found."""
    freqs, _ = lattice(code, found_hz, defect, top_hz, EXPLAINED_MODULATION_ORDERS)
    return [*freqs.tolist(), *(line.freq_hz for line in deciding)]


def screen_bearing(
    bank: EnvelopeBank,
    defect: DefectFrequencies,
    specs: dict[FaultCode, CombSpec],
    tol: float,
    report_confidence: float,
) -> BearingScreen:
    """Score every comb in every band of `bank`; call at most one location (module docstring)."""
    df = bank.df
    top = highest_line_hz(specs, tol)
    ratios = FloorRatios(bank.values, floor_half_width(defect, df), df)
    whole = bank.bands[0]
    confidences = {code: 0.0 for code in specs}
    untestable = [code for code, spec in specs.items() if not _resolvable(spec, tol, df)]
    if not ratios.any_line_can_be_significant():
        return BearingScreen(
            [], confidences, {code: whole for code in specs}, untestable=untestable
        )
    exclude = [k * defect.shaft for k in range(1, int(top / defect.shaft) + 2)]
    n_bands = len(bank.bands)
    open_codes = list(specs)
    accepted: list[BearingCall] = []
    undominant: list[BearingCall] = []
    best_bands: dict[FaultCode, Band] = {}
    while open_codes:
        table = CombTable.build(df, ratios.size, [specs[c] for c in open_codes], tol, exclude)
        passing: list[BearingCall] = []
        for code, score in zip(open_codes, table.score(ratios), strict=True):
            if score is None:
                confidences[code] = 0.0
                best_bands.setdefault(code, whole)
                continue
            trials = Trials(n_bands, len(specs), int(table.spans[score.comb]))
            corrected = np.minimum(0.0, score.log10_p + trials.log10)
            best_bands.setdefault(code, bank.bands[int(np.argmin(corrected))])
            below_shaft = specs[code].fundamental_hz < defect.shaft
            needed = MIN_HARMONICS_BELOW_SHAFT if below_shaft else MIN_HARMONICS
            eligible = score.significant >= needed
            if not eligible.any():
                confidences[code] = 0.0
                continue
            row = int(np.argmin(np.where(eligible, corrected, np.inf)))
            conf = confidence_from_log10_p(float(corrected[row]))
            confidences[code] = conf
            if conf >= report_confidence:
                passing.append(
                    _call(code, score, ratios, row, bank, float(corrected[row]), conf, trials)
                )
        dominant = [
            c for c in passing if _dominates(c, ratios, bank.bands.index(c.band), defect, top)
        ]
        seen = {c.code for c in undominant}
        undominant += [c for c in passing if c not in dominant and c.code not in seen]
        if not dominant:
            break
        best = min(dominant, key=lambda c: c.log10_p)
        accepted.append(best)
        open_codes.remove(best.code)
        exclude = exclude + explained_lines(best.code, best.found_hz, best.deciding, defect, top)
    return BearingScreen(
        accepted[:1], confidences, best_bands, accepted[1:], undominant, untestable
    )


def _resolvable(spec: CombSpec, tol: float, df: float) -> bool:
    """Whether the tolerance window of the fundamental holds at least one bin."""
    lo, hi = tolerance_bins(spec.fundamental_hz, tol, df)
    return hi >= max(1, lo)


def _dominates(
    call: BearingCall, ratios: FloorRatios, row: int, defect: DefectFrequencies, top_hz: float
) -> bool:
    """Whether the strongest significant line of the call's band, shaft harmonics aside, is a
    harmonic of the called carrier or a first-order sideband of its own modulation (shaft rate
    for the inner race, cage rate for a ball; module docstring). A cage-rate line itself does
    not count for a ball: a cage defect's impacts fill the envelope with FTF harmonics, and
    for the 6205 6 x FTF lies 1.4 % from BSF."""
    df = ratios.df
    rho = ratios.rho[row].copy()
    for k in range(1, int(top_hz / defect.shaft) + 2):
        c = round(k * defect.shaft / df)
        rho[max(0, c - SHAFT_GUARD_BINS) : c + SHAFT_GUARD_BINS + 1] = 0.0
    lo = max(1, math.ceil(0.5 * defect.ftf / df))
    hi = min(ratios.size - 2, int(top_hz / df))
    if hi < lo:
        return True
    k = lo + int(np.argmax(rho[lo : hi + 1]))
    if rho[k] < SIGNIFICANT_ONE_BIN_RATIO:
        return True
    freqs, harmonic = lattice(
        call.code, call.found_hz, defect, top_hz, 1, shaft_modulation=False, cage_lines=False
    )
    # A lattice line is known to within its harmonic's search window, plus a bin of smear.
    reach = np.asarray([harmonic_half_width(int(h)) + 1 for h in harmonic]) * df
    return bool(np.any(np.abs(freqs - k * df) <= reach))


def _call(
    code: FaultCode,
    score: CombScore,
    ratios: FloorRatios,
    row: int,
    bank: EnvelopeBank,
    log10_p: float,
    confidence: float,
    trials: Trials,
) -> BearingCall:
    return BearingCall(
        code=code,
        confidence=confidence,
        log10_p=log10_p,
        band=bank.bands[row],
        expected_hz=score.spec.fundamental_hz,
        found_hz=score.found_hz(row),
        harmonics=tuple(score.harmonic_lines(ratios, row)),
        sidebands=tuple(score.sideband_lines(ratios, row)),
        sideband_hz=score.spec.sideband_hz,
        trials=trials,
        tolerance=score.table.tol_rel,
    )
