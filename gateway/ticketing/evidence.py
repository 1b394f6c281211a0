"""Telemetry evidence for tickets: per related tag min / mean / max / last over a window and a
trend direction. Summaries only: raw samples never leave the site (DESIGN.md section 8).

Bounded memory: no sample is kept. The GOOD scalar samples of each tag, fed from
the same batches the telemetry store writes, are folded into running aggregates per time
bucket of `window_s / BUCKETS_PER_WINDOW` (60 s for the default 600 s window): count, sum,
min, max and the sums a least-squares slope needs, in one flat `array('d')` per tag, a ring
of `BUCKETS_PER_WINDOW + 1` buckets. Memory is a per-tag constant (about 0.9 kB), whatever
the value rate; a site polling 15 000 tags every second held about 1 GB of points before.

The figures are exact for the samples of the buckets a window covers, and the window is
widened to whole buckets (the resolution): a summary `now` covers every bucket that overlaps
`[now - window_s, now]`, so it may start up to one bucket earlier; the baseline `before` a
finding covers the whole buckets that end by `before` within the window before it (the
bucket the finding falls in is left out, so up to one bucket before the fault is not in the
baseline). A sample older than the ring (more than a window behind the tag's newest) is
not counted.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.records import Quality, Sample

MAX_TAGS_IN_SNAPSHOT = 16
# A tag whose least-squares change over the window stays within this share of its mean (or of
# its range, when the mean is near zero) is `steady`.
STEADY_SHARE = 0.02
# The window's resolution: a bucket is this share of it. Fewer buckets, less memory per tag.
BUCKETS_PER_WINDOW = 10

# Layout of a tag's array: its newest sample, then the ring of buckets. Within a bucket the
# times are offsets from the bucket's start (small numbers: the sums keep their precision).
_LAST_TS, _LAST_VALUE, _HEADER = 0, 1, 2
_NO, _COUNT, _SUM, _MIN, _MAX, _FIRST, _ST, _STT, _STV = range(9)  # `add` spells them out
_FIELDS = 9
_EMPTY = -1.0  # bucket number of a slot never written


class TelemetryWindow:
    def __init__(self, window_s: float, *, buckets: int = BUCKETS_PER_WINDOW) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("the evidence window needs a positive length and buckets")
        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self._slots = buckets + 1  # the window's buckets and the one being filled
        self._tags: dict[str, array[float]] = {}
        self._template = array("d", [-math.inf, math.nan] + [_EMPTY] * (self._slots * _FIELDS))

    @property
    def tags(self) -> int:
        return len(self._tags)

    def add(self, samples: Iterable[Sample]) -> None:
        bucket_s, slots, tags, bad = self.bucket_s, self._slots, self._tags, Quality.BAD
        isfinite = math.isfinite
        last_ts = math.nan
        number = 0
        tau = tau_tau = 0.0
        # The cells of the sample's bucket: no, count, sum, min, max, first, st, stt, stv.
        i_no = i_n = i_sum = i_min = i_max = i_first = i_st = i_stt = i_stv = 0
        for sample in samples:
            value = sample.value
            if value is None or sample.quality is bad or not isfinite(value):
                continue
            ts = sample.ts
            if ts != last_ts:  # the samples of one poll share their time stamp
                last_ts = ts
                number = int(ts // bucket_s)
                tau = ts - number * bucket_s
                tau_tau = tau * tau
                i_no = _HEADER + (number % slots) * _FIELDS
                i_n, i_sum, i_min, i_max = i_no + 1, i_no + 2, i_no + 3, i_no + 4
                i_first, i_st, i_stt, i_stv = i_no + 5, i_no + 6, i_no + 7, i_no + 8
            cells = tags.get(sample.tag)
            if cells is None:
                cells = tags[sample.tag] = array("d", self._template)
            held = cells[i_no]
            if held == number:
                cells[i_n] += 1.0
                cells[i_sum] += value
                if value < cells[i_min]:
                    cells[i_min] = value
                elif value > cells[i_max]:
                    cells[i_max] = value
                if tau < cells[i_first]:
                    cells[i_first] = tau
                cells[i_st] += tau
                cells[i_stt] += tau_tau
                cells[i_stv] += tau * value
            elif held < number:  # a new bucket takes the slot of one a window older
                cells[i_no] = number
                cells[i_n] = 1.0
                cells[i_sum] = cells[i_min] = cells[i_max] = value
                cells[i_first] = cells[i_st] = tau
                cells[i_stt] = tau_tau
                cells[i_stv] = tau * value
            else:
                continue  # older than the ring: that slot holds a newer bucket
            if ts >= cells[_LAST_TS]:
                cells[_LAST_TS] = ts
                cells[_LAST_VALUE] = value

    def summary(self, tags: Iterable[str], now: float) -> dict[str, dict[str, Any]]:
        """`{tag: {min, mean, max, last, count, trend, window_s}}` for tags with data."""
        first = int((now - self.window_s) // self.bucket_s)
        last = int(now // self.bucket_s)
        result: dict[str, dict[str, Any]] = {}
        for tag in tags:
            cells = self._tags.get(tag)
            if cells is None:
                continue
            totals = self._totals(cells, first, last)
            if totals is not None:  # a silent tag takes no slot: the bound is on what is shown
                totals.last_ts = cells[_LAST_TS]
                result[tag] = totals.figures(cells[_LAST_VALUE]) | {"window_s": self.window_s}
                if len(result) == MAX_TAGS_IN_SNAPSHOT:
                    break
        return result

    def means(self, tags: Iterable[str], *, before: float) -> dict[str, float]:
        """Mean per tag of the whole buckets that end by `before`, within the window before
        it: the pre-fault baseline of a ticket."""
        end = int(before // self.bucket_s)  # the first bucket that does not end by `before`
        if (end + 1) * self.bucket_s <= before:  # `before` is exactly on a boundary
            end += 1
        first = int((before - self.window_s) // self.bucket_s)
        means: dict[str, float] = {}
        for tag in tags:
            cells = self._tags.get(tag)
            totals = self._totals(cells, first, end - 1) if cells is not None else None
            if totals is not None:
                means[tag] = totals.total / totals.count
        return means

    def _totals(self, cells: array[float], first: int, last: int) -> _Totals | None:
        """The buckets numbered `first..last` that the ring still holds, oldest first."""
        totals: _Totals | None = None
        for number in range(max(first, last - self._slots + 1), last + 1):
            base = _HEADER + (number % self._slots) * _FIELDS
            if cells[base + _NO] != number:
                continue
            if totals is None:
                totals = _Totals(number * self.bucket_s + cells[base + _FIRST])
            totals.include(cells, base, number * self.bucket_s)
        return totals


class _Totals:
    """Sums over several buckets, times measured from the first sample."""

    __slots__ = ("count", "first_ts", "high", "last_ts", "low", "st", "stt", "stv", "total")

    def __init__(self, first_ts: float) -> None:
        self.first_ts = self.last_ts = first_ts
        self.count = 0.0
        self.total = self.st = self.stt = self.stv = 0.0
        self.low, self.high = math.inf, -math.inf

    def include(self, cells: array[float], base: int, start: float) -> None:
        n, total = cells[base + _COUNT], cells[base + _SUM]
        offset = start - self.first_ts  # t = offset + tau for every sample of the bucket
        st = cells[base + _ST]
        self.count += n
        self.total += total
        self.low = min(self.low, cells[base + _MIN])
        self.high = max(self.high, cells[base + _MAX])
        self.st += st + n * offset
        self.stt += cells[base + _STT] + 2 * offset * st + n * offset * offset
        self.stv += cells[base + _STV] + offset * total

    def figures(self, last_value: float) -> dict[str, Any]:
        n = self.count
        mean = self.total / n
        return {
            "min": self.low,
            "mean": mean,
            "max": self.high,
            "last": last_value,
            "count": int(n),
            "trend": self.trend(mean),
        }

    def trend(self, mean: float) -> str:
        """As `trend` below, from the sums: the slope times the span the samples cover."""
        n = self.count
        if n < 3:
            return "steady"
        var_x = self.stt - self.st * self.st / n
        if var_x <= 1e-12 * max(1.0, self.stt):
            return "steady"
        slope = (self.stv - self.st * self.total / n) / var_x
        return _direction(slope * (self.last_ts - self.first_ts), mean, self.low, self.high)


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
    return _direction(slope * (xs[-1] - xs[0]), mean_y, min(ys), max(ys))


def _direction(change: float, mean: float, low: float, high: float) -> str:
    """The least-squares change over the span against the tag's scale (`STEADY_SHARE`)."""
    scale = abs(mean) if abs(mean) > 1e-9 else (high - low)
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
