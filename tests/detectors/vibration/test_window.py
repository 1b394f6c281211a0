"""Blocks too short for the diagnosis are assembled into analyze's window (window.py).

The expectations come from the contract: a window holds exactly the samples of the stream, in
order, each once, wherever the blocks' timestamps say they follow each other; a gap, a block
whose repeated samples differ from those held, or a change of rate restarts the assembly; the
window is the power of two holding at least 32 revolutions, the length `analyze` uses.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.vibration import BearingCatalogue, VibrationDetector
from detectors.vibration.bearing_screen import BEARING_CODES
from detectors.vibration.checks import block_length
from detectors.vibration.diagnose import analyse_blocks
from detectors.vibration.iso20816 import Foundation, MachineGroup
from detectors.vibration.replay import replay
from detectors.vibration.window import WindowAssembler, window_length
from gateway.core.records import Waveform

from .recordings_support import EXCERPTS
from .signals import bearing_fault

FS = 51200.0
BLOCK = 4096
N = 4 * BLOCK  # a small window keeps the unit tests short; the logic does not depend on it
CATALOGUE = BearingCatalogue.load()
BEARING_VALUES = {c.value for c in BEARING_CODES}


def stream(samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(samples)


def feed(asm: WindowAssembler, x: np.ndarray, hop: int, fs: float = FS, t0: float = 0.0):
    windows = []
    for start in range(0, x.size - BLOCK + 1, hop):
        windows += asm.add(t0 + start / fs, x[start : start + BLOCK], fs, N)
    return windows


@pytest.mark.parametrize("hop", [BLOCK, BLOCK // 2, BLOCK // 4])
def test_contiguous_or_overlapping_blocks_give_the_streams_windows_each_sample_once(
    hop: int,
) -> None:
    x = stream(16 * BLOCK, seed=1)
    windows = feed(WindowAssembler(), x, hop)
    # Windows advance by half their length, whatever the blocks' overlap.
    starts = list(range(0, x.size - N + 1, N // 2))
    assert [w.start for w in windows] == pytest.approx([s / FS for s in starts])
    for w, s in zip(windows, starts, strict=True):
        np.testing.assert_array_equal(w.samples, x[s : s + N])


def test_a_gap_of_one_sample_restarts_the_assembly() -> None:
    x = stream(12 * BLOCK, seed=2)
    asm = WindowAssembler()
    assert asm.add(0.0, x[:BLOCK], FS, N) == []
    assert asm.add(BLOCK / FS, x[BLOCK : 2 * BLOCK], FS, N) == []
    # The next block starts one sample late: the samples in between are missing.
    late = 2 * BLOCK + 1
    assert asm.add(late / FS, x[late : late + BLOCK], FS, N) == []
    assert asm.interruption is not None and "not contiguous" in asm.interruption
    assert asm.held == BLOCK  # only the block after the gap is kept
    windows = []
    for start in range(late + BLOCK, late + 4 * BLOCK, BLOCK):
        windows += asm.add(start / FS, x[start : start + BLOCK], FS, N)
    (w,) = windows
    assert w.start == pytest.approx(late / FS)
    np.testing.assert_array_equal(w.samples, x[late : late + N])
    assert asm.interruption is None  # a window was completed since


def test_timestamp_jitter_under_half_a_sample_is_still_contiguous() -> None:
    x = stream(4 * BLOCK, seed=3)
    asm = WindowAssembler()
    windows = []
    for i, start in enumerate(range(0, x.size, BLOCK)):
        # Offsets are read against the first block's clock: +-0.2 samples differ by 0.4.
        jitter = (0.2 if i % 2 else -0.2) / FS
        windows += asm.add(start / FS + jitter, x[start : start + BLOCK], FS, N)
    (w,) = windows
    np.testing.assert_array_equal(w.samples, x[:N])


def test_an_overlap_whose_samples_differ_from_those_held_restarts() -> None:
    # Stamps that do not describe the samples (a block stamped half a block early, carrying
    # new data): joining it would count wrong samples as repeats.
    x = stream(8 * BLOCK, seed=4)
    asm = WindowAssembler()
    asm.add(0.0, x[:BLOCK], FS, N)
    asm.add((BLOCK // 2) / FS, x[BLOCK : 2 * BLOCK], FS, N)
    assert asm.interruption is not None and "does not repeat" in asm.interruption
    assert asm.held == BLOCK


def test_a_block_going_back_before_the_held_samples_restarts() -> None:
    x = stream(8 * BLOCK, seed=5)
    asm = WindowAssembler()
    asm.add(10.0, x[:BLOCK], FS, N)
    asm.add(10.0 + BLOCK / FS, x[BLOCK : 2 * BLOCK], FS, N)
    asm.add(9.0, x[2 * BLOCK : 3 * BLOCK], FS, N)  # a clock set back by a second
    assert asm.held == BLOCK and asm.interruption is not None


def test_the_same_block_again_adds_nothing() -> None:
    x = stream(2 * BLOCK, seed=6)
    asm = WindowAssembler()
    asm.add(0.0, x[:BLOCK], FS, N)
    assert asm.add(0.0, x[:BLOCK], FS, N) == []
    assert asm.held == BLOCK and asm.interruption is None


def test_a_rate_change_restarts_the_assembly() -> None:
    x = stream(8 * BLOCK, seed=7)
    asm = WindowAssembler()
    asm.add(0.0, x[:BLOCK], FS, N)
    asm.add(BLOCK / FS, x[BLOCK : 2 * BLOCK], FS, N)
    # The sensor is reconfigured; the next block follows in time at the new rate's clock.
    assert asm.add(2 * BLOCK / FS, x[2 * BLOCK : 3 * BLOCK], FS / 2, N) == []
    assert asm.held == BLOCK and asm.fs == FS / 2
    assert asm.interruption is not None and "sample rate changed" in asm.interruption


@pytest.mark.parametrize(("fs", "rpm"), [(51200.0, 600), (51200.0, 900), (51200.0, 1200),
                                         (48828.0, 1500), (48000.0, 1797)])  # fmt: skip
def test_the_window_is_the_block_analyze_cuts_from_a_long_record(fs: float, rpm: float) -> None:
    n = window_length(fs, rpm / 60)
    assert n == block_length(10**8, fs, rpm / 60)
    assert 32 <= n * (rpm / 60) / fs < 64


def test_the_window_holds_while_the_speed_wanders_near_a_boundary() -> None:
    # 131072 samples at 51.2 kHz hold 32 revolutions at 750 rpm: a speed read at 748 rpm
    # keeps the window (3 % hysteresis) instead of doubling it; 700 rpm doubles it.
    assert window_length(FS, 760 / 60) == 131072
    assert window_length(FS, 748 / 60, current=131072) == 131072
    assert window_length(FS, 748 / 60) == 262144
    assert window_length(FS, 700 / 60, current=131072) == 262144


def hit_excerpt() -> tuple[np.ndarray, float, float]:
    with np.load(EXCERPTS / "hit_ir5_1200.npz") as z:
        return z["signal"].astype(np.float64), float(z["fs"]), float(z["rpm"])


def test_the_daemon_path_locates_the_hit_inner_race_on_an_assembled_window() -> None:
    # 16384 samples at 51.2 kHz hold 6.4 revolutions at 1200 rpm; eight contiguous blocks
    # make the 131072-sample window (51.2 revolutions) analyze uses.
    x, fs, rpm = hit_excerpt()
    geometry = CATALOGUE.get("6205")
    for overlap, window_block in ((0.0, 7), (0.5, 14)):
        det = VibrationDetector(asset="a", tag_id="t", geometry=geometry, fixed_rpm=rpm)
        run = replay(det, x, fs, overlap=overlap)
        assert run.not_diagnosed is None and run.window_length == 131072
        assert run.analyses == 1
        d = det.last_diagnosis
        assert d is not None and d.block_length == 131072
        assert [f.code for f in d.faults if f.code in BEARING_VALUES] == ["bearing.inner_race"]
        assert d.withheld == []
        # One window is one look: the default rule (three looks) opens no ticket on 2.56 s;
        # a rule confirming on one look opens the inner race on the block completing it.
        assert run.events == []
        once = VibrationDetector(
            asset="a", tag_id="t", geometry=geometry, fixed_rpm=rpm, confirm_blocks=1
        )
        opened = [(e.code, e.block) for e in replay(once, x, fs, overlap=overlap).events]
        assert opened == [("bearing.inner_race", window_block)]


def test_the_window_is_diagnosed_as_analyze_diagnoses_the_same_samples() -> None:
    x, fs, rpm = hit_excerpt()
    geometry = CATALOGUE.get("6205")
    det = VibrationDetector(asset="a", tag_id="t", geometry=geometry, fixed_rpm=rpm)
    replay(det, x, fs)
    live = det.last_diagnosis
    assert live is not None
    offline = analyse_blocks(
        x[None, :131072],
        fs,
        shaft_hz=rpm / 60,
        speed_source="fixed",
        geometry=geometry,
        group=MachineGroup.MEDIUM,
        foundation=Foundation.RIGID,
        settings=det.settings,
    )
    assert [(f.code, f.confidence) for f in live.faults] == [
        (f.code, f.confidence) for f in offline.faults
    ]
    assert live.screened == offline.screened
    assert live.fault("bearing.inner_race").evidence == offline.fault(  # type: ignore[union-attr]
        "bearing.inner_race"
    ).evidence


@pytest.mark.parametrize(("hop", "opens_at"), [(2048, 23), (1024, 46)])
def test_three_separate_windows_confirm_and_overlapping_ones_do_not_count_twice(
    hop: int, opens_at: int
) -> None:
    # 2048 samples at 12 kHz hold 5.1 revolutions at 1797 rpm: blocks are assembled into
    # 16384-sample windows advancing by 8192. Windows 0, 2 and 4 are the three separate
    # looks; the third ends at sample 3 x 16384, on block 23 (contiguous blocks) or block 46
    # (half-overlapping blocks, which hold no more new samples than contiguous ones).
    x = bearing_fault("outer", multiplier=3.5848, fs=12000.0, seconds=4.5, seed=31)
    det = VibrationDetector(
        asset="a", tag_id="t", geometry=CATALOGUE.get("6205"), fixed_rpm=29.95 * 60
    )
    opened = []
    for i, start in enumerate(range(0, x.size - 2048 + 1, hop)):
        wf = Waveform("t", start / 12000.0, 12000.0, x[start : start + 2048])
        opened += [(f.fault_code, i) for f in det.update(wf) if f.active]
    assert det.window_length == 16384
    assert opened == [("bearing.outer_race", opens_at)]


def test_blocks_stamped_with_gaps_are_never_joined_and_the_detector_says_why() -> None:
    x = bearing_fault("outer", multiplier=3.5848, fs=12000.0, seconds=6.0, seed=32)
    det = VibrationDetector(
        asset="a", tag_id="t", geometry=CATALOGUE.get("6205"), fixed_rpm=29.95 * 60
    )
    # A poller that reads a 2048-sample buffer every 0.2 s (2400 samples): 352 samples are
    # missing between blocks, so no window may be assembled across them.
    for start in range(0, x.size - 2048 + 1, 2400):
        assert det.update(Waveform("t", start / 12000.0, 12000.0, x[start : start + 2048])) == []
    assert det.last_diagnosis is None
    assert det.problem is not None and "not contiguous" in det.problem
    assert "configure blocks of at least 8 revolutions" in det.problem  # what to change


def test_a_new_window_length_restarts_the_assembly() -> None:
    # The speed read from a tag doubles: the window it needs halves, and samples gathered for
    # the old length are not mixed into the new one.
    x = stream(8 * BLOCK, seed=8)
    asm = WindowAssembler()
    asm.add(0.0, x[:BLOCK], FS, N)
    asm.add(BLOCK / FS, x[BLOCK : 2 * BLOCK], FS, N)
    assert asm.add(2 * BLOCK / FS, x[2 * BLOCK : 3 * BLOCK], FS, N // 2) == []
    assert asm.held == BLOCK and asm.n == N // 2
    assert asm.interruption is not None and "window length changed" in asm.interruption


def test_a_refused_block_is_never_inside_a_window() -> None:
    # A NaN block between good ones: the window restarts after it, so the first analysis
    # covers only samples after the refused block.
    x = bearing_fault("outer", multiplier=3.5848, fs=12000.0, seconds=4.0, seed=33)
    det = VibrationDetector(
        asset="a", tag_id="t", geometry=CATALOGUE.get("6205"), fixed_rpm=29.95 * 60
    )
    for i, start in enumerate(range(0, x.size - 2048 + 1, 2048)):
        block = x[start : start + 2048].copy()
        if i == 5:
            block[100] = np.nan
        det.update(Waveform("t", start / 12000.0, 12000.0, block))
        if i == 5:
            assert det.problem is not None and "NaN" in det.problem
        if det.last_diagnosis is not None:
            first_start, _ = det.last_span
            assert first_start == pytest.approx(6 * 2048 / 12000.0)
            break
    else:
        pytest.fail("no window was analysed after the refused block")
