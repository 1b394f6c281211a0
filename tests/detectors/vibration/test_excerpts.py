"""Regression per fault class on the vendored excerpts (tests/data), through both paths.

`analyze` (the whole excerpt, averaged) must name the true location and no other; the daemon's
detector with the default rule settings, fed the excerpt in 16384-sample blocks (contiguous and
half-overlapping), must open only the true location's ticket, or none. A wrong-location call
or a false alarm is a failure whatever else the diagnosis says. These always run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detectors.vibration import BearingCatalogue, VibrationDetector
from detectors.vibration.bearing_screen import BEARING_CODES
from detectors.vibration.diagnose import diagnose
from detectors.vibration.replay import replay

from .recordings_support import EXCERPTS

CATALOGUE = BearingCatalogue.load()
BEARING_VALUES = {c.value for c in BEARING_CODES}

# excerpt, bearing, truth, tickets the daemon opens on contiguous blocks (block index each)
CASES = [
    ("cwru_or007_6_130_de", "6205", "bearing.outer_race", {"bearing.outer_race": 2}),
    ("cwru_ir007_105_de", "6205", "bearing.inner_race", {"bearing.inner_race": 2}),
    ("cwru_b028_3007_de", "6205", "bearing.rolling_element", {"bearing.rolling_element": 2}),
    ("cwru_normal_97_de", "6205", "normal", {}),
    # 16384 samples at 48828 Hz hold 8.4 revolutions: too coarse to resolve the MFPT lines.
    ("mfpt_or_vload1", "NICE", "bearing.outer_race", {}),
    ("mfpt_ir_vload1", "NICE", "bearing.inner_race", {}),
    ("ims_20031022_120624_ch1", "ZA-2115", "normal", {}),
    # The second rig: 16384 samples at 51.2 kHz hold 6.4 revolutions at 1200 rpm; the daemon
    # assembles them into analyze's 131072-sample window (51.2 revolutions). The inner-race
    # excerpt holds one window (one look: no ticket under three-look confirmation; the window's
    # own verdict is tested in test_window.py), the outer-race one none.
    ("hit_ir5_1200", "6205", "bearing.inner_race", {}),
    ("hit_or5_1200", "6205", "bearing.outer_race", {}),
]


def excerpt(name: str) -> tuple[np.ndarray, float, float]:
    with np.load(EXCERPTS / f"{name}.npz") as z:
        return z["signal"].astype(np.float64), float(z["fs"]), float(z["rpm"])


def test_every_vendored_excerpt_has_a_case() -> None:
    names = {p.stem for p in Path(EXCERPTS).glob("*.npz")}
    assert names == {case[0] for case in CASES}


@pytest.mark.parametrize(("name", "bearing", "truth", "tickets"), CASES)
def test_analyze_names_the_true_location_and_no_other(
    name: str, bearing: str, truth: str, tickets: dict[str, int]
) -> None:
    x, fs, rpm = excerpt(name)
    d = diagnose(x, fs, shaft_hz=rpm / 60, geometry=CATALOGUE.get(bearing))
    called = [f.code for f in d.faults if f.code in BEARING_VALUES]
    assert called == ([] if truth == "normal" else [truth])
    if truth != "normal":
        ev = d.fault(truth).evidence  # type: ignore[union-attr]
        assert len(ev["harmonics"]) >= 2  # two significant harmonics of the carrier decided
        assert abs(ev["deviation_pct"]) <= ev["tolerance_pct"]


@pytest.mark.parametrize("overlap", [0.0, 0.5])
@pytest.mark.parametrize(("name", "bearing", "truth", "tickets"), CASES)
def test_the_daemon_opens_only_the_true_location(
    name: str, bearing: str, truth: str, tickets: dict[str, int], overlap: float
) -> None:
    x, fs, rpm = excerpt(name)
    det = VibrationDetector(asset="a", tag_id="t", geometry=CATALOGUE.get(bearing), fixed_rpm=rpm)
    run = replay(det, x, fs, overlap=overlap)
    opened = {e.code: e.block for e in run.events if e.opened and e.code in BEARING_VALUES}
    assert set(opened) <= ({truth} if truth != "normal" else set())
    if overlap == 0.0:
        assert opened == tickets
    elif tickets:
        # Half-overlapping blocks repeat half their samples: three separate looks take five.
        assert opened == {code: 2 * block for code, block in tickets.items()}
    if name.startswith("hit_"):
        assert run.window_length == 131072
        assert run.analyses == x.size // 131072
        if run.analyses == 0:
            assert run.not_diagnosed is not None and "no complete window" in run.not_diagnosed
