from __future__ import annotations

import logging
from pathlib import Path

import pytest

from detectors.vibration.catalogue import BearingCatalogue
from detectors.vibration.detector import VibrationDetector
from gateway.core.records import Waveform
from gateway.runtime.detector_state import restore_detector_state, save_detector_state
from gateway.store.snapshots import DetectorSnapshots
from simulator.vibration import VibrationMachine


def test_state_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    snapshots = DetectorSnapshots(tmp_path / "detectors")
    snapshots.save("pump-1-vib.de_bearing", {"baseline": {"n": 20}, "active": []})
    assert snapshots.load("pump-1-vib.de_bearing") == {"baseline": {"n": 20}, "active": []}
    assert [p.name for p in (tmp_path / "detectors").iterdir()] == ["pump-1-vib.de_bearing.json"]
    assert snapshots.load("never-saved") is None


def test_a_corrupt_state_file_is_reported_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snapshots = DetectorSnapshots(tmp_path)
    (tmp_path / "d.json").write_text('{"baseline": ')
    with caplog.at_level(logging.WARNING):
        assert snapshots.load("d") is None
    assert "corrupt" in caplog.text


def test_vibration_baseline_survives_a_restart(tmp_path: Path) -> None:
    bearing = BearingCatalogue.load().get("SKF-6205")
    machine = VibrationMachine(12_800, 8192, 2950 / 60, bearing, seed=2)

    def detector() -> VibrationDetector:
        return VibrationDetector(
            asset="pump-1",
            tag_id="pump-1.vib",
            geometry=bearing,
            fixed_rpm=2950,
            baseline_blocks=5,
            name="pump-1.vib",
        )

    first = detector()
    for i in range(5):
        first.update(Waveform("pump-1.vib", float(i), 12_800.0, machine.next_block()))
    learnt = first.snapshot()
    assert first.baseline.learned, "five healthy blocks make the baseline"
    snapshots = DetectorSnapshots(tmp_path)
    save_detector_state([first], snapshots)

    after_restart = detector()
    restore_detector_state([after_restart], snapshots)
    assert after_restart.baseline.learned
    assert after_restart.snapshot() == learnt
