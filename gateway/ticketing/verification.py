"""Verification after repair (issue 5): after the central system reports a repair, watch the
asset for a window of *running* time and compare its tags with the pre-fault baseline.

Pure bookkeeping fed with samples; the ticket service decides what to publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.records import Sample
from gateway.ticketing.evidence import compare_to_baseline

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

    def verdict(self, tolerance: float) -> tuple[bool, dict[str, dict[str, float | bool]]]:
        return compare_to_baseline(self.baseline, self.after_means(), tolerance)
