"""Summary telemetry: per asset and period, features of what was acquired, never the samples
(DESIGN.md section 8).

For every scalar tag: count, BAD count, min, mean, max and last value over the period. For
every waveform tag: the number of blocks and the RMS / peak of the blocks (what the vibration
family also starts from). For every detector of the asset: the small `features` of its latest
finding (velocity RMS, crest factor, kurtosis, confidence...). The documents go out on
`summaries/<asset>` through the uplink, and therefore through the egress guard.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.clock import Clock
from gateway.core.records import Finding, Quality, Sample, Waveform


@dataclass(slots=True)
class _ScalarStats:
    count: int = 0
    bad: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last: float | None = None

    def add(self, sample: Sample) -> None:
        value = sample.value
        if sample.quality is Quality.BAD or value is None or not math.isfinite(value):
            self.bad += 1
            return
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.last = value

    def document(self) -> dict[str, Any]:
        if self.count == 0:
            return {"n": 0, "bad": self.bad}
        return {
            "n": self.count,
            "bad": self.bad,
            "min": _round(self.low),
            "mean": _round(self.total / self.count),
            "max": _round(self.high),
            "last": _round(self.last),
        }


@dataclass(slots=True)
class _WaveformStats:
    blocks: int = 0
    rms_total: float = 0.0
    rms_max: float = 0.0
    peak_max: float = 0.0

    def add(self, waveform: Waveform) -> None:
        # Imported here so that a site without waveforms does not load numpy (resident memory).
        import numpy as np

        data = np.asarray(waveform.data, dtype=np.float64)
        if data.size == 0:
            return
        centred = data - float(np.mean(data))
        rms = float(np.sqrt(np.mean(centred * centred)))
        self.blocks += 1
        self.rms_total += rms
        self.rms_max = max(self.rms_max, rms)
        self.peak_max = max(self.peak_max, float(np.max(np.abs(centred))))

    def document(self) -> dict[str, Any]:
        if self.blocks == 0:
            return {"blocks": 0}
        return {
            "blocks": self.blocks,
            "rms_mean": _round(self.rms_total / self.blocks),
            "rms_max": _round(self.rms_max),
            "peak_max": _round(self.peak_max),
        }


@dataclass(slots=True)
class _AssetWindow:
    scalars: dict[str, _ScalarStats] = field(default_factory=dict)
    waveforms: dict[str, _WaveformStats] = field(default_factory=dict)
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.scalars or self.waveforms or self.findings)


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _small_numbers(features: Mapping[str, Any], limit: int = 16) -> dict[str, Any]:
    """Only scalar numbers from a finding's features, at most `limit` of them."""
    out: dict[str, Any] = {}
    for key, value in features.items():
        if len(out) >= limit:
            break
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[str(key)] = _round(float(value))
    return out


class SummaryCollector:
    """Accumulates per asset between two `take()` calls. Plain methods: no I/O, no await."""

    def __init__(self, asset_of_tag: Mapping[str, str]) -> None:
        self._asset_of_tag = dict(asset_of_tag)
        self._windows: dict[str, _AssetWindow] = {}

    def _window(self, asset: str) -> _AssetWindow:
        return self._windows.setdefault(asset, _AssetWindow())

    def add_samples(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            asset = self._asset_of_tag.get(sample.tag)
            if asset is None:
                continue
            self._window(asset).scalars.setdefault(sample.tag, _ScalarStats()).add(sample)

    def add_waveform(self, waveform: Waveform) -> None:
        asset = self._asset_of_tag.get(waveform.tag)
        if asset is None:
            return
        self._window(asset).waveforms.setdefault(waveform.tag, _WaveformStats()).add(waveform)

    def add_finding(self, finding: Finding) -> None:
        self._window(finding.asset).findings[finding.detector] = {
            "fault_code": finding.fault_code,
            "active": finding.active,
            "score": _round(finding.score),
            "features": _small_numbers(finding.features),
        }

    def take(self) -> dict[str, dict[str, Any]]:
        """The per-asset documents (without site, gateway and time) since the last call."""
        windows, self._windows = self._windows, {}
        out: dict[str, dict[str, Any]] = {}
        for asset, window in sorted(windows.items()):
            if window.empty:
                continue
            tags: dict[str, Any] = {tag: s.document() for tag, s in window.scalars.items()}
            tags.update({tag: w.document() for tag, w in window.waveforms.items()})
            out[asset] = {"tags": tags, "findings": window.findings}
        return out


SummarySink = Callable[[str, dict[str, Any]], Awaitable[bool]]


async def run_summaries(
    collector: SummaryCollector,
    publish: SummarySink,
    clock: Clock,
    *,
    site: str,
    gateway: str,
    period_s: float,
    timestamp: Callable[[float], str],
) -> None:
    """Every `period_s`, hand one document per asset to `publish(asset, document)` (the
    uplink's droppable outbox entry). Runs until cancelled."""
    while True:
        await asyncio.sleep(period_s)
        now = clock.now()
        for asset, body in collector.take().items():
            document = {
                "site": site,
                "gateway": gateway,
                "asset": asset,
                "time": timestamp(now),
                "period_s": period_s,
                **body,
            }
            await publish(asset, document)
