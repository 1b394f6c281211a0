"""The spectrum kept when a vibration finding opens a ticket (local file, bounded)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from gateway.core.records import FaultCode, Finding, Priority, Ticket, TicketState, Waveform
from gateway.core.spectrum_view import Curve, MarkedLine, MatchedLine, SpectrumView
from gateway.runtime.site.snapshots import SnapshotRecorder, SpectrumSnapshots


def view(ts: float = 1.0) -> SpectrumView:
    return SpectrumView(
        tag="pump-1-vib.vib_de", asset="pump-1", ts=ts,
        spectrum=Curve("acceleration spectrum", "g", 10.0, (0.0, 0.1, 0.02)),
        envelope=Curve("envelope spectrum", "g²", 1.5, (0.0, 1e-4, 3e-4)),
        band_hz=(1600.0, 4800.0), shaft_hz=49.2, speed_source="tag", bearing="SKF-6205",
        lines=(MarkedLine("BPFO", 1, 176.4),), matched=(MatchedLine("bearing.outer_race", "1x",
        175.0, 21.0),), verdict="bearing.outer_race", faults=(("bearing.outer_race", 0.99),),
        zone="A", velocity_rms_mm_s=0.47, zone_boundaries_mm_s=(1.4, 2.8, 4.5),
        features={"kurtosis": 4.5}, baseline={"kurtosis": (3.0, 0.1)},
    )  # fmt: skip


def test_a_snapshot_reads_back_as_written(tmp_path: Path) -> None:
    store = SpectrumSnapshots(tmp_path / "spectra")
    assert store.load("T-a-b-20260101-0001") is None
    assert store.save("T-a-b-20260101-0001", view())
    assert store.has("T-a-b-20260101-0001")
    assert store.load("T-a-b-20260101-0001") == view()


@pytest.mark.parametrize("ticket_id", ["../../etc/passwd", "a/b", ".hidden", "", "x" * 300])
def test_an_id_that_is_not_a_ticket_id_never_becomes_a_path(tmp_path: Path, ticket_id: str):
    store = SpectrumSnapshots(tmp_path / "spectra")
    assert store.path(ticket_id) is None
    assert not store.save(ticket_id, view())
    assert store.load(ticket_id) is None
    assert not (tmp_path / "spectra").exists()


def test_the_folder_keeps_only_the_newest(tmp_path: Path) -> None:
    store = SpectrumSnapshots(tmp_path, keep=3)
    for n in range(5):
        assert store.save(f"T-{n}", view(ts=n))
        os.utime(tmp_path / f"T-{n}.json", (1000 + n, 1000 + n))
    store.save("T-5", view(ts=5))
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["T-3", "T-4", "T-5"]


def test_a_damaged_file_is_reported_and_shown_as_missing(tmp_path: Path, caplog) -> None:
    (tmp_path / "T-1.json").write_text('{"tag": "x"')
    store = SpectrumSnapshots(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert store.load("T-1") is None
    assert "cannot be read" in caplog.text


def test_a_refused_write_costs_the_snapshot_only(tmp_path: Path, caplog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    store = SpectrumSnapshots(blocked / "spectra")
    with caplog.at_level(logging.WARNING):
        assert not store.save("T-1", view())
    assert store.failures == 1 and "not kept" in caplog.text


class FakeSpectrumDetector:
    name = "pump-1-vib.de_bearing"
    asset = "pump-1"
    tag_id = "pump-1-vib.vib_de"

    def __init__(self) -> None:
        self.asked: list[float] = []

    def spectrum_view(self, waveform: Waveform) -> SpectrumView | None:
        self.asked.append(waveform.ts)
        return view(ts=waveform.ts)


def finding(detector: str = "pump-1-vib.de_bearing", active: bool = True) -> Finding:
    return Finding(asset="pump-1", fault_code=FaultCode.BEARING_OUTER_RACE,
                   severity=Priority.P2, score=0.9, detector=detector, message="m", ts=42.0,
                   active=active)  # fmt: skip


def ticket(revision: int) -> Ticket:
    return Ticket(id="T-a-b-20260101-0002", key="k", site="a", asset="pump-1",
                  fault_code="bearing.outer_race", detector="pump-1-vib.de_bearing",
                  priority=Priority.P2, state=TicketState.OPENED, revision=revision,
                  opened_at=42.0, first_seen=42.0, last_seen=42.0, occurrences=1,
                  peak_value=None, message="m")  # fmt: skip


async def test_the_block_that_opened_a_ticket_is_kept_once(tmp_path: Path) -> None:
    store = SpectrumSnapshots(tmp_path)
    detector = FakeSpectrumDetector()
    current = {"ticket": ticket(1)}
    blocks = {42.0: Waveform("pump-1-vib.vib_de", 42.0, 1000.0, np.ones(8))}

    async def waveform_at(tag: str, ts: float) -> Waveform | None:
        return blocks.get(ts) if tag == detector.tag_id else None

    recorder = SnapshotRecorder(store, [detector], lambda f: current["ticket"], waveform_at)
    await recorder.after_finding(finding(detector="threshold:hot"))  # not a spectrum detector
    await recorder.after_finding(finding(active=False))  # a clear opens nothing
    assert detector.asked == [] and not store.has("T-a-b-20260101-0002")
    await recorder.after_finding(finding())
    assert detector.asked == [42.0]
    kept = store.load("T-a-b-20260101-0002")
    assert kept is not None and kept.ts == 42.0
    await recorder.after_finding(finding())  # a re-confirmation keeps the first one
    current["ticket"] = ticket(3)
    (tmp_path / "T-a-b-20260101-0002.json").unlink()
    await recorder.after_finding(finding())  # an older ticket re-triggered: not its opening
    assert detector.asked == [42.0] and not store.has("T-a-b-20260101-0002")
