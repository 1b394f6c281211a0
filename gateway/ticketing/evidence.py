"""Telemetry evidence for tickets: per related tag min / mean / max / last over a window and a
trend direction. Summaries only: raw samples never leave the site (DESIGN.md section 8).

Bounded memory: no sample is kept. The GOOD scalar samples of each tag, fed from
the same batches the telemetry store writes, are folded into running aggregates per time
bucket of `window_s / BUCKETS_PER_WINDOW` (60 s for the default 600 s window), a ring of
`BUCKETS_PER_WINDOW + 1` buckets per tag: count, sum, min, max and the sums a least-squares
slope needs. Memory is a per-tag constant, whatever the value rate; a site polling 15 000
tags every second held about 1 GB of points before.

The sums that depend only on the samples' times (count, first time, sum of times and of their
squares) are the same for every tag of a device that had a usable sample in each of the
device's polls, since the samples of one poll share their time stamp. They are kept once per
device (a *timeline*, keyed by the tag id without its last part); such a tag keeps
only its value sums (sum, min, max, sum of time x value): about 0.45 kB per tag instead of
0.9 kB (6.4 MB at 15 000 tags). A tag that misses one of its device's polls (BAD, not finite,
a deadband) or has a sample its device's newest poll does not explain (late, repeated)
takes its own copy of the time sums from then on, so every figure stays exact. A poll cut
in two by the batches it is handed over in is still one poll.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Any

from gateway.core.records import Poll, Quality, Sample, SampleBatch, time_runs

MAX_TAGS_IN_SNAPSHOT = 16
# A tag whose least-squares change over the window stays within this share of its mean (or of
# its range, when the mean is near zero) is `steady`.
STEADY_SHARE = 0.02
# The window's resolution: a bucket is this share of it. Fewer buckets, less memory per tag.
BUCKETS_PER_WINDOW = 10

# A tag's array: a header, its value sums per bucket, and (a tag off its device's timeline
# only) its own time sums per bucket. Within a bucket the times are offsets from the bucket's
# start (small numbers: the sums keep their precision).
_LAST_TS, _LAST_VALUE, _TIMELINE, _SEEN, _HEADER = range(5)
# `_TIMELINE`: the index of its device's timeline, or -1 - that index once the tag keeps its
# own time sums. `_SEEN`: the last poll (`TelemetryWindow._polls`) it had a sample in.
_SUM, _MIN, _MAX, _STV = range(4)  # value sums of a bucket; `add` spells them out
_VALUE_FIELDS = 4
_NO, _COUNT, _FIRST, _ST, _STT = range(5)  # time sums of a bucket (bucket number first)
_TIME_FIELDS = 5
_EMPTY = -1.0  # bucket number of a slot never written

_TAG, _VALUE, _QUALITY = attrgetter("tag"), attrgetter("value"), attrgetter("quality")


class _Timeline:
    """The time sums of one device's polls, and the tags that follow them."""

    __slots__ = ("cells", "last_ts", "members")

    def __init__(self, template: array[float]) -> None:
        self.cells = array("d", template)
        self.last_ts = -math.inf  # the newest poll counted
        self.members: list[str] = []  # tags with a sample in every poll counted


class TelemetryWindow:
    def __init__(self, window_s: float, *, buckets: int = BUCKETS_PER_WINDOW) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("the evidence window needs a positive length and buckets")
        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self._slots = slots = buckets + 1  # the window's buckets and the one being filled
        self._tags: dict[str, array[float]] = {}
        self._timelines: list[_Timeline] = []
        self._timeline_of: dict[str, int] = {}  # device -> index in `_timelines`
        self._polls = 0.0  # a number per poll counted on a timeline (`_SEEN`)
        self._own_at = _HEADER + slots * _VALUE_FIELDS  # where a tag's own time sums start
        self._times = array("d", [_EMPTY, 0.0, 0.0, 0.0, 0.0] * slots)
        self._template = array("d", [-math.inf, math.nan, 0.0, -1.0])
        self._template.extend(array("d", [0.0]) * (slots * _VALUE_FIELDS))
        self._no_line = _Timeline(self._times)
        # The poll being read, kept between calls: the runner hands samples over in batches
        # of a few hundred, which cut polls in two; a poll is counted on its timeline when
        # the next one starts, or before a figure is read.
        self._poll: tuple[_Timeline, float, int, bool, int] = (
            self._no_line,
            math.nan,
            -1,
            False,
            0,
        )

    @property
    def tags(self) -> int:
        return len(self._tags)

    def add(self, samples: Iterable[Sample]) -> None:
        """Fold samples in. A batch is usually several polls one after the other: each that is
        a whole poll of a timeline's members, every sample usable, is folded in at once
        (`_fold_poll`); anything else sample by sample. The runner's batch hands its polls
        over as such (`SampleBatch.parts`), so their samples are never made here."""
        if not isinstance(samples, SampleBatch):
            self._add_samples(samples if isinstance(samples, Sequence) else list(samples))
            return
        loose: list[Sample] = []
        for part in samples.parts:
            if not isinstance(part, Poll):
                loose.append(part)
                continue
            if loose:  # in arrival order: the poll being read carries over between them
                self._add_samples(loose)
                loose = []
            if not self._fold_poll(part.tags, part.ts, part.values):
                self._add_each(zip(part.tags, repeat(part.ts), part.values))
        if loose:
            self._add_samples(loose)

    def _add_samples(self, samples: Sequence[Sample]) -> None:
        tags = list(map(_TAG, samples))
        for start, end in time_runs(samples):
            if not self._add_poll(samples[start:end], tags[start:end], samples[start].ts):
                self._add_each(_usable(samples[start:end]))

    def _add_poll(self, run: Sequence[Sample], tags: list[str], ts: float) -> bool:
        """`_fold_poll` for a run of samples with one time stamp, when every one is usable."""
        values = list(map(_VALUE, run))
        if (
            list(map(_QUALITY, run)).count(Quality.BAD)
            or None in values
            or not all(map(math.isfinite, values))
        ):
            return False
        return self._fold_poll(tags, ts, values)

    def _fold_poll(self, tags: Sequence[str], ts: float, values: Sequence[float]) -> bool:
        """The usable values of one poll folded in when it is one whole poll of a timeline,
        newer than its newest; False (nothing changed but the poll being read, now counted)
        otherwise. What `_add_each` does for such a poll, in one pass without its checks."""
        first = tags[0]
        head, dot, _ = first.rpartition(".")
        at = self._timeline_of.get(head if dot else first)
        if at is None:
            return False
        line = self._timelines[at]
        if len(tags) != len(line.members) or list(tags) != line.members:
            return False
        if self._poll[0] is line and self._poll[1] == ts:
            return False  # the rest of the poll being read
        self._settle()
        if not ts > line.last_ts:
            return False  # late or repeated: `_add_each` takes the tags off the timeline
        number = int(ts // self.bucket_s)
        tau = ts - number * self.bucket_s
        v_sum = _HEADER + (number % self._slots) * _VALUE_FIELDS
        v_min, v_max, v_stv = v_sum + 1, v_sum + 2, v_sum + 3
        t_no = (number % self._slots) * _TIME_FIELDS
        cells_of = list(map(self._tags.__getitem__, tags))
        if line.cells[t_no + _NO] == number:
            for cells, value in zip(cells_of, values, strict=True):
                cells[v_sum] += value
                if value < cells[v_min]:
                    cells[v_min] = value
                elif value > cells[v_max]:
                    cells[v_max] = value
                cells[v_stv] += tau * value
                cells[_LAST_TS] = ts
                cells[_LAST_VALUE] = value
        else:  # a new bucket takes the slot of one a window older
            for cells, value in zip(cells_of, values, strict=True):
                cells[v_sum] = cells[v_min] = cells[v_max] = value
                cells[v_stv] = tau * value
                cells[_LAST_TS] = ts
                cells[_LAST_VALUE] = value
        self._polls += 1.0  # a number of its own, as `_add_each` gives every poll
        _count_time(line.cells, t_no, number, tau)
        line.last_ts = ts
        return True

    def _add_each(self, points: Iterable[tuple[str, float, float]]) -> None:
        """Fold in usable values one by one: `(tag, ts, value)`, each value finite."""
        bucket_s, slots, tags = self.bucket_s, self._slots, self._tags
        timelines = self._timelines
        own_at = self._own_at
        # The poll being read: its timeline and time, whether it is newer than the timeline's
        # newest (then counted on it) and how many members had a sample in it.
        line, poll_ts, poll_line, fresh, seen = self._poll
        polls = self._polls
        number = int(poll_ts // bucket_s) if math.isfinite(poll_ts) else 0
        tau = poll_ts - number * bucket_s if math.isfinite(poll_ts) else 0.0
        v_sum = _HEADER + (number % slots) * _VALUE_FIELDS  # where its bucket's sums start
        t_no = (number % slots) * _TIME_FIELDS
        for tag, ts, value in points:
            cells = tags.get(tag)
            if cells is None:
                cells = self._new_tag(tag, ts, line, fresh, poll_ts)
            index = int(cells[_TIMELINE])
            at = index if index >= 0 else -1 - index
            if ts != poll_ts or at != poll_line:  # the samples of one poll share a stamp
                if fresh:
                    self._count_poll(line, poll_ts, seen, polls)
                poll_ts, poll_line, line = ts, at, timelines[at]
                fresh, seen = ts > line.last_ts, 0
                self._polls = polls = polls + 1.0
                number = int(ts // bucket_s)
                tau = ts - number * bucket_s
                v_sum = _HEADER + (number % slots) * _VALUE_FIELDS
                t_no = (number % slots) * _TIME_FIELDS
            if index >= 0 and (not fresh or cells[_SEEN] == polls):
                # Late, repeated or twice in one poll: the timeline does not say this tag's
                # times any more.
                cells = self._leave_timeline(tag, cells, line, fresh, number, tau)
                index = -1
                if fresh:  # twice in this poll: counted in `seen` once, no longer a member
                    seen -= 1
            if index >= 0:
                cells[_SEEN] = polls
                seen += 1
                held = line.cells[t_no + _NO]  # the poll is counted on the timeline at its end
                if held == number:
                    cells[v_sum] += value
                    if value < cells[v_sum + 1]:
                        cells[v_sum + 1] = value
                    elif value > cells[v_sum + 2]:
                        cells[v_sum + 2] = value
                    cells[v_sum + 3] += tau * value
                else:  # a new bucket takes the slot of one a window older
                    cells[v_sum] = cells[v_sum + 1] = cells[v_sum + 2] = value
                    cells[v_sum + 3] = tau * value
            else:
                o_no = own_at + t_no
                held = cells[o_no]
                if held == number:
                    cells[o_no + 1] += 1.0
                    cells[v_sum] += value
                    if value < cells[v_sum + 1]:
                        cells[v_sum + 1] = value
                    elif value > cells[v_sum + 2]:
                        cells[v_sum + 2] = value
                    if tau < cells[o_no + 2]:
                        cells[o_no + 2] = tau
                    cells[o_no + 3] += tau
                    cells[o_no + 4] += tau * tau
                    cells[v_sum + 3] += tau * value
                elif held < number:
                    cells[o_no] = number
                    cells[o_no + 1] = 1.0
                    cells[v_sum] = cells[v_sum + 1] = cells[v_sum + 2] = value
                    cells[o_no + 2] = cells[o_no + 3] = tau
                    cells[o_no + 4] = tau * tau
                    cells[v_sum + 3] = tau * value
                else:
                    continue  # older than the ring: that slot holds a newer bucket
            if ts >= cells[_LAST_TS]:
                cells[_LAST_TS] = ts
                cells[_LAST_VALUE] = value
        self._poll = (line, poll_ts, poll_line, fresh, seen)

    def _settle(self) -> None:
        """Count the poll being read (before figures are read from the timelines)."""
        line, poll_ts, _, fresh, seen = self._poll
        if fresh:
            self._count_poll(line, poll_ts, seen, self._polls)
        self._poll = (self._no_line, math.nan, -1, False, 0)

    def _new_tag(
        self, tag: str, ts: float, line: _Timeline, fresh: bool, poll_ts: float
    ) -> array[float]:
        # `<device>.<point>` follows its device's polls; a derived `<device>.<point>.<feature>`
        # the analyses of its point, whose features share a stamp.
        head, dot, _ = tag.rpartition(".")
        device = head if dot else tag
        at = self._timeline_of.get(device)
        if at is None:
            at = self._timeline_of[device] = len(self._timelines)
            self._timelines.append(_Timeline(self._times))
        cells = self._tags[tag] = array("d", self._template)
        timeline = self._timelines[at]
        if timeline.last_ts == -math.inf and (timeline is not line or (fresh and ts == poll_ts)):
            # Seen in its device's first poll: it follows the timeline (when the poll is
            # under way, `add` counts it in; a tag first seen later has missed polls).
            cells[_TIMELINE] = at
            timeline.members.append(tag)
        else:
            cells[_TIMELINE] = -1 - at
            cells.extend(self._times)
        return cells

    def _leave_timeline(
        self,
        tag: str,
        cells: array[float],
        line: _Timeline,
        pending: bool,
        number: int,
        tau: float,
    ) -> array[float]:
        """`tag` keeps its own time sums from now on: its timeline's, plus this poll's time
        when the tag had a sample in the poll and the poll is not counted yet (`pending`)."""
        if cells[_TIMELINE] < 0:
            return cells
        own = array("d", cells)
        own.extend(line.cells)
        own[_TIMELINE] = -1 - cells[_TIMELINE]
        if pending and cells[_SEEN] == self._polls:
            _count_time(own, self._own_at + (number % self._slots) * _TIME_FIELDS, number, tau)
        self._tags[tag] = own
        line.members.remove(tag)
        return own

    def _count_poll(self, line: _Timeline, ts: float, seen: int, polls: float) -> None:
        """A poll newer than its timeline's newest is over: members without a sample in it
        leave the timeline, then its time is counted on it."""
        if seen < len(line.members):
            for tag in [t for t in line.members if self._tags[t][_SEEN] != polls]:
                self._leave_timeline(tag, self._tags[tag], line, False, 0, 0.0)
        number = int(ts // self.bucket_s)
        _count_time(
            line.cells, (number % self._slots) * _TIME_FIELDS, number, ts - number * self.bucket_s
        )
        line.last_ts = ts

    def summary(self, tags: Iterable[str], now: float) -> dict[str, dict[str, Any]]:
        """`{tag: {min, mean, max, last, count, trend, window_s}}` for tags with data."""
        self._settle()
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
        self._settle()
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
        index = int(cells[_TIMELINE])
        times, offset = (self._timelines[index].cells, 0) if index >= 0 else (cells, self._own_at)
        totals: _Totals | None = None
        for number in range(max(first, last - self._slots + 1), last + 1):
            slot = number % self._slots
            t_base = offset + slot * _TIME_FIELDS
            if times[t_base + _NO] != number:
                continue
            if totals is None:
                totals = _Totals(number * self.bucket_s + times[t_base + _FIRST])
            v_base = _HEADER + slot * _VALUE_FIELDS
            totals.include(cells, v_base, times, t_base, number * self.bucket_s)
        return totals


def signal_first(tags: Sequence[str], signal: str | None) -> Sequence[str]:
    """`tags` with `signal` and the tags derived from it (`<signal>.<feature>`, a vibration
    detector's features of its waveform) moved to the front, `signal` added if missing: a
    summary shows at most `MAX_TAGS_IN_SNAPSHOT` tags, in the order asked."""
    if signal is None:
        return tags
    prefix = signal + "."
    derived = [tag for tag in tags if tag.startswith(prefix)]
    rest = [tag for tag in tags if tag != signal and not tag.startswith(prefix)]
    return [signal, *derived, *rest]


def _usable(samples: Iterable[Sample]) -> Iterator[tuple[str, float, float]]:
    """`(tag, ts, value)` of the samples with a finite value that are not BAD."""
    bad, isfinite = Quality.BAD, math.isfinite
    for sample in samples:
        value = sample.value
        if value is not None and sample.quality is not bad and isfinite(value):
            yield sample.tag, sample.ts, value


def _count_time(times: array[float], base: int, number: int, tau: float) -> None:
    """One sample time in the time sums of the bucket at `base`."""
    if times[base + _NO] == number:
        times[base + _COUNT] += 1.0
        if tau < times[base + _FIRST]:
            times[base + _FIRST] = tau
        times[base + _ST] += tau
        times[base + _STT] += tau * tau
    elif times[base + _NO] < number:
        times[base + _NO] = number
        times[base + _COUNT] = 1.0
        times[base + _FIRST] = times[base + _ST] = tau
        times[base + _STT] = tau * tau


class _Totals:
    """Sums over several buckets, times measured from the first sample."""

    __slots__ = ("count", "first_ts", "high", "last_ts", "low", "st", "stt", "stv", "total")

    def __init__(self, first_ts: float) -> None:
        self.first_ts = self.last_ts = first_ts
        self.count = 0.0
        self.total = self.st = self.stt = self.stv = 0.0
        self.low, self.high = math.inf, -math.inf

    def include(
        self, values: array[float], v_base: int, times: array[float], t_base: int, start: float
    ) -> None:
        n, total = times[t_base + _COUNT], values[v_base + _SUM]
        offset = start - self.first_ts  # t = offset + tau for every sample of the bucket
        st = times[t_base + _ST]
        self.count += n
        self.total += total
        self.low = min(self.low, values[v_base + _MIN])
        self.high = max(self.high, values[v_base + _MAX])
        self.st += st + n * offset
        self.stt += times[t_base + _STT] + 2 * offset * st + n * offset * offset
        self.stv += values[v_base + _STV] + offset * total

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
