"""The site page's read-only view of a `VibrationDetector` (detectors/vibration/view.py): the
drawn spectra, the defect lines at the running speed and the lines the diagnosis matched."""

from __future__ import annotations

import numpy as np

from detectors.vibration import BearingCatalogue
from gateway.core.interfaces import SpectrumDetector
from gateway.core.records import Quality, Sample, Waveform
from gateway.core.spectrum_view import SpectrumView

from .test_detector import BLOCK, FS, SHAFT, blocks, detector, feed

# SKF 6205 (9 balls, d = 7.94 mm, D = 39.04 mm, 0 deg): BPFO = 9/2 (1 - d/D) = 3.585 x shaft.
BPFO_ORDER = 4.5 * (1 - 7.94 / 39.04)


def test_is_a_spectrum_detector_and_draws_nothing_for_another_tag_or_a_bad_block() -> None:
    det = detector()
    assert isinstance(det, SpectrumDetector)
    data = blocks("healthy", 1, seed=1)[0]
    assert det.spectrum_view(Waveform("other.tag", 0.0, FS, data)) is None
    bad = Waveform("pump-1.de_accel", 0.0, FS, data, quality=Quality.BAD)
    assert det.spectrum_view(bad) is None
    flat = Waveform("pump-1.de_accel", 0.0, FS, np.zeros(BLOCK))
    assert det.spectrum_view(flat) is None


def test_outer_race_view_marks_bpfo_at_the_running_speed_and_rings_the_matched_lines() -> None:
    det = detector()
    det.update(Sample("pump-1.speed", 0.0, SHAFT * 60))
    data = blocks("outer", 4, seed=11)
    feed(det, data)
    view = det.spectrum_view(Waveform("pump-1.de_accel", 3.0, FS, data[-1], unit="g"))
    assert view is not None and view.verdict == "bearing.outer_race"
    bpfo = {line.harmonic: line.freq_hz for line in view.lines if line.name == "BPFO"}
    assert sorted(bpfo) == [1, 2, 3]
    assert abs(bpfo[1] - BPFO_ORDER * SHAFT) < 0.01 * BPFO_ORDER * SHAFT
    assert abs(bpfo[2] - 2 * bpfo[1]) < 1e-6 * bpfo[1] + 0.01
    matched = [m for m in view.matched if m.fault == "bearing.outer_race"]
    assert matched, view.matched
    # Every matched line is a harmonic of BPFO within the 3 % slip the family allows.
    for line in matched:
        order = line.freq_hz / (BPFO_ORDER * SHAFT)
        assert abs(order - round(order)) < 0.03 * round(order), line
    # The envelope spectrum drawn has its largest line (above half BPFO) on a BPFO harmonic.
    env = view.envelope
    assert env is not None
    start = int(0.5 * BPFO_ORDER * SHAFT / env.df_hz)
    order = (start + int(np.argmax(env.values[start:]))) * env.df_hz / (BPFO_ORDER * SHAFT)
    assert round(order) >= 1 and abs(order - round(order)) < 0.03 * round(order) + 0.02
    assert view.band_hz is not None and view.band_hz[1] <= FS / 2
    assert len(view.spectrum.values) <= 1200 and view.spectrum.top_hz <= FS / 2


def test_view_survives_its_own_document_form() -> None:
    det = detector(geometry=BearingCatalogue.load().get("6205"))
    det.update(Sample("pump-1.speed", 0.0, SHAFT * 60))
    data = blocks("outer", 3, seed=5)
    feed(det, data)
    view = det.spectrum_view(Waveform("pump-1.de_accel", 2.0, FS, data[-1]))
    assert view is not None
    assert SpectrumView.from_dict(view.to_dict()) == view
