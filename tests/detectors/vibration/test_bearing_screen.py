"""The bearing decision on synthetic envelope banks: lines placed bin by bin on a noise floor.

Each expectation is a rule of issue 12 or a property of the chance law, not a value the code
happens to give: two significant harmonics make a call and one does not; sidebands never make
one; candidates and harmonic windows stay inside the slip tolerance; the chance is paid for
every band and comb tried; an accepted defect explains its lattice away; one location per
bearing; the band's strongest line must belong to the called defect.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.vibration import BearingCatalogue
from detectors.vibration.bearing_screen import (
    BearingScreen,
    comb_specs,
    floor_half_width,
    screen_bearing,
)
from detectors.vibration.envelope import Band, EnvelopeBank
from detectors.vibration.matching import LINE_SIGNIFICANT_P
from gateway.core.records import FaultCode

DF = 0.5  # Hz per bin
BINS = 1400
SHAFT = 29.95
DEFECT = BearingCatalogue.load().get("6205").multipliers().at(SHAFT)
SPECS = comb_specs(DEFECT, 3, 4, 3)
TOL = 0.03
OUTER, INNER, BALL = (
    FaultCode.BEARING_OUTER_RACE,
    FaultCode.BEARING_INNER_RACE,
    FaultCode.BEARING_ROLLING_ELEMENT,
)
WHOLE = Band(0.0, 6000.0, 0)


def noise_row(seed: int) -> np.ndarray:
    # Envelope amplitude whose power is exponential: one block's periodogram of noise.
    return np.sqrt(np.random.default_rng(seed).exponential(1.0, BINS))


def put(row: np.ndarray, freq_hz: float, level_db: float) -> None:
    """A line `level_db` above the median power (ln 2) of the exponential floor."""
    row[round(freq_hz / DF)] = math.sqrt(math.log(2) * 10 ** (level_db / 10))


def screen(*rows: np.ndarray, bands: tuple[Band, ...] | None = None) -> BearingScreen:
    if bands is None:
        bands = (WHOLE, *(Band(1000.0 * i, 1000.0 * i + 2000, 2) for i in range(len(rows) - 1)))
    bank = EnvelopeBank(bands=bands, df=DF, values=np.stack(rows), blocks=1)
    return screen_bearing(bank, DEFECT, SPECS, TOL, 0.5)


def codes(s: BearingScreen) -> list[FaultCode]:
    return [c.code for c in s.calls]


def test_noise_alone_calls_nothing() -> None:
    for seed in range(20):
        assert codes(screen(noise_row(seed))) == []


def test_two_significant_harmonics_make_a_call_and_one_strong_line_does_not() -> None:
    row = noise_row(1)
    put(row, DEFECT.bpfo, 40.0)
    assert codes(screen(row)) == []  # one line, however strong
    put(row, 2 * DEFECT.bpfo, 16.0)
    s = screen(row)
    assert codes(s) == [OUTER]
    assert [ln.label for ln in s.calls[0].deciding] == ["1x", "2x"]


def test_sidebands_support_but_never_make_a_call() -> None:
    row = noise_row(2)
    put(row, DEFECT.bpfi, 25.0)
    for h in (1, 2, 3):  # every +-fr sideband strong, the carrier's harmonics absent
        put(row, h * DEFECT.bpfi - SHAFT, 25.0)
        put(row, h * DEFECT.bpfi + SHAFT, 25.0)
    assert INNER not in codes(screen(row))
    put(row, 2 * DEFECT.bpfi, 20.0)
    s = screen(row)
    assert codes(s) == [INNER]
    assert sum(ln.significant for ln in s.calls[0].sidebands) == 6  # shown as support


def test_the_fundamental_is_searched_inside_the_slip_tolerance_only() -> None:
    edge_hz = DEFECT.bpfo * (1 + TOL)
    inside = math.floor(edge_hz / DF) * DF  # the last bin inside +3 %
    outside = inside + DF  # the first bin beyond: rounding must not add it
    for fundamental, called in ((inside, True), (outside, False)):
        row = noise_row(3)
        put(row, fundamental, 25.0)
        put(row, 2 * fundamental, 25.0)
        put(row, 3 * fundamental, 25.0)
        assert (OUTER in codes(screen(row))) is called, fundamental


def test_each_harmonic_window_stays_inside_h_times_the_tolerance() -> None:
    # A fundamental at the tolerance edge; its 2nd harmonic found one bin beyond 2 x (1 + tol)
    # would be inside the +-2 bin search window around 2 x candidate, but outside h x tol.
    inside = math.floor(DEFECT.bpfo * (1 + TOL) / DF) * DF
    beyond = (math.floor(2 * DEFECT.bpfo * (1 + TOL) / DF) + 1) * DF
    row = noise_row(4)
    put(row, inside, 25.0)
    put(row, beyond, 25.0)
    assert OUTER not in codes(screen(row))
    row[round(beyond / DF)] = 1.0
    put(row, beyond - DF, 25.0)  # the last bin inside 2 x (1 + tol)
    assert OUTER in codes(screen(row))


def test_the_chance_is_paid_for_every_band_and_comb_tried() -> None:
    row = noise_row(5)
    put(row, DEFECT.bpfo, 14.0)
    put(row, 2 * DEFECT.bpfo, 14.0)
    one = screen(row)
    assert codes(one) == [OUTER]
    quiet = [noise_row(100 + i) for i in range(56)]
    many = screen(row, *quiet)
    # The same comb in the same band, now the best of 57 bands: 57 times the chance.
    assert codes(many) == [OUTER] and many.calls[0].band == WHOLE
    assert many.calls[0].log10_p == pytest.approx(one.calls[0].log10_p + math.log10(57))
    assert many.calls[0].confidence < one.calls[0].confidence
    assert one.calls[0].trials.bands == 1 and one.calls[0].trials.combs == 4
    # Corrected chance of the call: below 1e-4 (confidence 0.5) after the 1 x 4 trials.
    assert one.calls[0].log10_p <= -4.0
    assert LINE_SIGNIFICANT_P == 1e-3


def test_the_band_is_the_one_the_comb_scores_best_in() -> None:
    quiet, loud = noise_row(6), noise_row(7)
    for h in (1, 2, 3):
        put(loud, h * DEFECT.bpfo, 22.0)
    s = screen(quiet, quiet.copy(), loud, quiet.copy())
    assert codes(s) == [OUTER]
    assert s.calls[0].band == Band(1000.0, 3000.0, 2)
    assert s.best_bands[OUTER] == s.calls[0].band


def test_an_outer_race_does_not_also_find_an_inner_race_on_its_own_lines() -> None:
    # 6205, nine balls: 3 x BPFO lies 0.7 % from 2 x BPFI, inside the inner comb's tolerance.
    row = noise_row(8)
    for h in (1, 2, 3, 4):
        put(row, h * DEFECT.bpfo, 25.0)
    put(row, DEFECT.bpfi, 14.0)  # a weak line at BPFI: with 3 x BPFO, two "inner" harmonics
    s = screen(row)
    assert codes(s) == [OUTER]
    assert s.withheld == []
    assert s.confidences[INNER] == 0.0


def test_a_second_location_that_still_passes_is_withheld_not_called() -> None:
    outer, ball = noise_row(9), noise_row(19)
    for h in (1, 2, 3):
        put(outer, h * DEFECT.bpfo, 25.0)
        put(ball, h * DEFECT.bsf * 1.01, 22.0)  # an independent ball comb in another band
    s = screen(outer, ball)
    assert codes(s) == [OUTER]
    assert [c.code for c in s.withheld] == [BALL]


def test_a_comb_whose_band_is_dominated_by_a_line_it_does_not_explain_is_not_called() -> None:
    row = noise_row(10)
    for h in (1, 2):
        put(row, h * DEFECT.bpfo, 18.0)
    put(row, 4.47 * SHAFT, 30.0)  # the strongest line: no harmonic of BPFO, no shaft order
    s = screen(row)
    assert codes(s) == []
    assert [c.code for c in s.not_dominant] == [OUTER]


def test_floor_reach_is_at_least_one_shaft_order() -> None:
    assert floor_half_width(DEFECT, DF) == round(SHAFT / DF)
    assert floor_half_width(DEFECT, 10.0) == 10
