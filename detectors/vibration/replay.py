"""Feed a recording to a live `VibrationDetector` block by block: the tickets the daemon would
open on it (`analyze --json`'s `daemon` object, bench/vibration/confusion.py).

Blocks are cut from the recording as a waveform source would deliver them, `block` samples
each, a new one every `block * (1 - overlap)` samples, stamped with the time of their first
sample. The speed travels as the detector's fixed rpm, as a rule with `rpm:` configures it.
Blocks holding fewer revolutions than the diagnosis needs are assembled by the detector into
windows of `window_length` samples (window.py); a recording shorter than one window gets no
analysis, and `not_diagnosed` says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from detectors.vibration.detector import VibrationDetector
from detectors.vibration.spectrum import FloatArray
from gateway.core.records import Waveform

DAEMON_BLOCK = 16384  # the block length of the simulator, the bench and common OPC UA nodes
# The live detector logs each change of state for the operator; a replay reports them itself.
_DETECTOR_LOG = logging.getLogger("detectors.vibration.detector")


@dataclass(frozen=True, slots=True)
class TicketEvent:
    code: str
    opened: bool  # False: the condition cleared
    block: int  # index of the block whose analysis raised it (0 = first)
    at_s: float  # end of that block, in seconds from the start of the recording
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "event": "opened" if self.opened else "cleared",
            "block": self.block,
            "at_s": round(self.at_s, 3),
            "confidence": round(self.confidence, 3),
        }


@dataclass(frozen=True, slots=True)
class Look:
    """One analysis of the replay, before confirmation: what it alone would call."""

    block: int  # index of the block that completed it
    start_s: float  # its first and last sample's span, in seconds from the recording's start
    end_s: float
    calls: tuple[str, ...]  # fault codes of the analysis, strongest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "span_s": [round(self.start_s, 3), round(self.end_s, 3)],
            "calls": list(self.calls),
        }


@dataclass(frozen=True)
class Replay:
    block: int
    overlap: float
    blocks: int
    analyses: int
    events: list[TicketEvent] = field(default_factory=list)
    not_diagnosed: str | None = None  # why blocks were refused, if they were
    window_length: int | None = None  # samples per assembled window; None: blocks alone
    looks: list[Look] = field(default_factory=list)  # every analysis, in order

    @property
    def opened(self) -> list[str]:
        return [e.code for e in self.events if e.opened]

    def to_dict(self) -> dict[str, Any]:
        return {
            "block_length": self.block,
            "overlap": self.overlap,
            "blocks": self.blocks,
            "analyses": self.analyses,
            "tickets": [e.to_dict() for e in self.events],
            "not_diagnosed": self.not_diagnosed,
            "window_length": self.window_length,
            "looks": [look.to_dict() for look in self.looks],
        }


def replay(
    detector: VibrationDetector,
    signal: FloatArray,
    fs: float,
    *,
    block: int = DAEMON_BLOCK,
    overlap: float = 0.0,
    tag: str | None = None,
) -> Replay:
    """Run `detector` (fresh, fixed rpm set as wanted) over `signal` (in g)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    hop = max(1, round(block * (1.0 - overlap)))
    tag = tag or detector.tag_id
    starts = range(0, signal.size - block + 1, hop)
    level = _DETECTOR_LOG.level
    _DETECTOR_LOG.setLevel(logging.ERROR)
    try:
        events, looks, refused, window = _feed(detector, signal, fs, block, starts, tag)
    finally:
        _DETECTOR_LOG.setLevel(level)
    analyses = len(looks)
    if window and not analyses and refused is None:
        refused = (
            f"blocks of {block} samples are assembled into windows of {window} samples "
            f"({window / fs:.2f} s); the recording ({signal.size} samples) holds no complete "
            "window"
        )
    return Replay(block, overlap, len(starts), analyses, events, refused, window, looks)


def _feed(
    detector: VibrationDetector,
    signal: FloatArray,
    fs: float,
    block: int,
    starts: range,
    tag: str,
) -> tuple[list[TicketEvent], list[Look], str | None, int | None]:
    events: list[TicketEvent] = []
    looks: list[Look] = []
    refused: str | None = None
    window: int | None = None
    for i, start in enumerate(starts):
        before = detector.last_diagnosis
        findings = detector.update(Waveform(tag, start / fs, fs, signal[start : start + block]))
        refused = refused or detector.problem
        window = window or detector.window_length
        d = detector.last_diagnosis
        if d is not None and d is not before:
            span = detector.last_span
            calls = tuple(f.code for f in d.faults)
            looks.append(Look(i, span[0], span[1], calls))
        events += [
            TicketEvent(f.fault_code, f.active, i, (start + block) / fs, f.score)
            for f in findings
        ]
    return events, looks, refused, window
