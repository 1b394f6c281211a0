"""Telemetry evidence for tickets: per related tag min / mean / max / last over a window and a
trend direction (issue 5). Summaries only: raw samples never leave the site (DESIGN.md section 8).

The window keeps the GOOD scalar samples of the last `window_s` seconds per tag in memory, fed
from the same batches the telemetry store writes. Bounded twice: by time and by `max_points`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.records import Quality, Sample

MAX_TAGS_IN_SNAPSHOT = 16
# A tag whose least-squares change over the window stays within this share of its mean (or of
# its range, when the mean is near zero) is `steady`.
STEADY_SHARE = 0.02


class TelemetryWindow:
    def __init__(self, window_s: float, *, max_points: int = 2000) -> None:
        self.window_s = window_s
        self._max_points = max_points
        self._points: dict[str, deque[tuple[float, float]]] = {}

    def add(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            value = sample.value
            if sample.quality is Quality.BAD or value is None or not math.isfinite(value):
                continue
            points = self._points.get(sample.tag)
            if points is None:
                points = self._points[sample.tag] = deque(maxlen=self._max_points)
            points.append((sample.ts, float(value)))
            while points and points[0][0] < sample.ts - self.window_s:
                points.popleft()

    def values(
        self, tag: str, *, after: float = -math.inf, before: float = math.inf
    ) -> list[float]:
        return [v for ts, v in self._points.get(tag, ()) if after <= ts < before]

    def summary(self, tags: Iterable[str], now: float) -> dict[str, dict[str, Any]]:
        """`{tag: {min, mean, max, last, count, trend, window_s}}` for tags with data."""
        result: dict[str, dict[str, Any]] = {}
        for tag in tags:
            points = [(ts, v) for ts, v in self._points.get(tag, ()) if ts >= now - self.window_s]
            if points:  # a silent tag takes no slot: the bound is on what is shown
                result[tag] = summarise(points) | {"window_s": self.window_s}
                if len(result) == MAX_TAGS_IN_SNAPSHOT:
                    break
        return result

    def means(self, tags: Iterable[str], *, before: float) -> dict[str, float]:
        """Mean per tag of the samples before `before`: the pre-fault baseline of a ticket."""
        means: dict[str, float] = {}
        for tag in tags:
            values = self.values(tag, before=before)
            if values:
                means[tag] = sum(values) / len(values)
        return means


def summarise(points: list[tuple[float, float]]) -> dict[str, Any]:
    values = [v for _, v in points]
    mean = sum(values) / len(values)
    return {
        "min": min(values),
        "mean": mean,
        "max": max(values),
        "last": values[-1],
        "count": len(values),
        "trend": trend(points),
    }


def trend(points: list[tuple[float, float]]) -> str:
    """`rising`, `falling` or `steady`, from the least-squares slope over the points."""
    if len(points) < 3:
        return "steady"
    t0 = points[0][0]
    xs = [ts - t0 for ts, _ in points]
    ys = [v for _, v in points]
    n = len(points)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var_x = sum((x - mean_x) ** 2 for x in xs)
    if var_x == 0:
        return "steady"
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var_x
    change = slope * (xs[-1] - xs[0])
    scale = abs(mean_y) if abs(mean_y) > 1e-9 else (max(ys) - min(ys))
    if abs(change) <= STEADY_SHARE * scale or scale == 0:
        return "steady"
    return "rising" if change > 0 else "falling"


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far a tag's mean after a repair may be from its pre-fault mean."""

    relative: float  # a share of the baseline
    floor: float  # in the tag's units: the least change allowed, for baselines near zero
    rise_only: bool = False  # only a rise fails (vibration: quieter than before is no fault)

    def allowed(self, before: float) -> float:
        return max(self.relative * abs(before), self.floor)

    def within(self, before: float, after: float) -> bool:
        change = after - before
        return (change if self.rise_only else abs(change)) <= self.allowed(before)


def compare_to_baseline(
    baseline: Mapping[str, float],
    after: Mapping[str, float],
    tolerance: float | Callable[[str], Tolerance],
) -> tuple[bool, dict[str, dict[str, float | bool]]]:
    """Each tag's mean after the repair against its pre-fault mean. A plain `tolerance` is
    relative, with a floor of as many absolute units for values near zero (such as a run
    state); a function gives each tag its own `Tolerance`."""
    figures: dict[str, dict[str, float | bool]] = {}
    passed = True
    for tag, before in baseline.items():
        if tag not in after:
            continue
        now = after[tag]
        rule = tolerance(tag) if callable(tolerance) else Tolerance(tolerance, tolerance)
        within = rule.within(before, now)
        passed = passed and within
        figures[tag] = {"before": _figure(before), "after": _figure(now), "within": within}
    return passed, figures


def _figure(value: float) -> float:
    """Six significant digits: a mean of many samples carries float noise nobody should read."""
    return float(f"{value:.6g}")
