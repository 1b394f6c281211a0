"""Verification after repair: after the central system reports a repair, watch the
asset for a window of *running* time and compare its tags with the pre-fault baseline.

Scalar tags keep the plain rule: the mean after within `verification_tolerance` of the mean
before, either way, with a floor of as many units. The vibration features the detector derives
from a waveform tag (declared by the detector with a rise floor, `DerivedTag`) are judged
as vibration is: only a rise fails (a repaired machine may well run quieter than before the
fault), by more than the same relative tolerance or, for small baselines, by more than a floor
in the feature's own units, above what block-to-block scatter of a healthy machine gives.

Pure bookkeeping fed with samples; the ticket service decides what to publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.records import Sample
from gateway.ticketing.evidence import Tolerance, compare_to_baseline

# A gap between samples longer than this is not counted as running time (a stopped poller).
MAX_STEP_S = 60.0


@dataclass(slots=True)
class VerificationWatch:
    ticket_key: str
    asset: str
    started_at: float
    baseline: dict[str, float]
    window_s: float
    tags: frozenset[str] = frozenset()  # the asset's tags: any of them measures running time
    running_s: float = 0.0
    last_ts: float | None = None
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def observe(self, sample: Sample, running: bool) -> None:
        if sample.value is None or sample.ts < self.started_at:
            return
        if self.last_ts is not None and running and sample.ts > self.last_ts:
            self.running_s += min(sample.ts - self.last_ts, MAX_STEP_S)
        if self.last_ts is None or sample.ts > self.last_ts:
            self.last_ts = sample.ts
        if running and sample.tag in self.baseline:
            self.sums[sample.tag] = self.sums.get(sample.tag, 0.0) + float(sample.value)
            self.counts[sample.tag] = self.counts.get(sample.tag, 0) + 1

    @property
    def due(self) -> bool:
        return self.running_s >= self.window_s

    def after_means(self) -> dict[str, float]:
        return {tag: self.sums[tag] / n for tag, n in self.counts.items() if n}

    def verdict(
        self, tolerance: float, rise_floors: Mapping[str, float]
    ) -> tuple[bool, dict[str, dict[str, float | bool]]]:
        return compare_to_baseline(
            self.baseline,
            self.after_means(),
            lambda tag: tolerance_for(tag, tolerance, rise_floors),
        )


def tolerance_for(tag: str, relative: float, rise_floors: Mapping[str, float]) -> Tolerance:
    """A derived tag (its detector declared a rise floor) fails only on a rise; any other
    tag on a change either way, with a floor of `relative` units."""
    floor = rise_floors.get(tag)
    if floor is None:
        return Tolerance(relative, relative)
    return Tolerance(relative, floor, rise_only=True)
