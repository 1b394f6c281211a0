"""The evidence window in bounded memory (issue 17 item 1): the figures a ticket carries equal
those computed from the raw samples over the window widened to whole buckets (the resolution
`evidence.py` states), and what the window retains does not grow with the samples fed."""

import gc
import math
import random

import numpy as np
import pytest

from gateway.core.records import Quality, Sample
from gateway.ticketing.evidence import BUCKETS_PER_WINDOW, STEADY_SHARE, TelemetryWindow

WINDOW_S = 600.0
BUCKET_S = WINDOW_S / BUCKETS_PER_WINDOW  # the stated resolution: 60 s


def raw_figures(points: list[tuple[float, float]]) -> dict[str, object]:
    """min/mean/max/last/count and the trend of the points, with numpy: the slope of a degree-1
    least-squares fit times the span, against 2 % of the mean (the rule TICKETS.md states)."""
    ts = np.array([t for t, _ in points])
    vs = np.array([v for _, v in points])
    slope = np.polyfit(ts - ts[0], vs, 1)[0]
    change = slope * (ts[-1] - ts[0])
    scale = abs(vs.mean())
    direction = (
        "steady" if abs(change) <= STEADY_SHARE * scale else "rising" if change > 0 else "falling"
    )
    return {
        "min": vs.min(),
        "mean": vs.mean(),
        "max": vs.max(),
        "last": vs[-1],
        "count": len(vs),
        "trend": direction,
    }


def plant_samples(seed: int, shape: str) -> list[Sample]:
    """Two tags at 1 s with jittered stamps over three windows, a few BAD and NaN samples."""
    rng = random.Random(seed)
    samples = []
    for i in range(int(3 * WINDOW_S)):
        ts = 1_700_000_000.0 + i + rng.uniform(-0.05, 0.05)
        drift = {"rising": 0.05 * i, "falling": -0.05 * i, "steady": 0.0}[shape]
        samples.append(Sample("a", ts, 100.0 + drift + rng.gauss(0, 1.0)))
        samples.append(Sample("b", ts, 5.0 + rng.gauss(0, 0.2)))
        if i % 97 == 0:
            samples.append(Sample.bad("a", ts, "timeout"))
            samples.append(Sample("b", ts, math.nan, Quality.GOOD))
    return samples


def widened(samples: list[Sample], tag: str, start: float, end: float) -> list[tuple[float, float]]:
    """The GOOD finite samples of `tag` in the buckets overlapping [start, end]."""
    first = math.floor(start / BUCKET_S) * BUCKET_S
    return [
        (s.ts, s.value)
        for s in samples
        if s.tag == tag
        and s.quality is not Quality.BAD
        and s.value is not None
        and math.isfinite(s.value)
        and first <= s.ts <= end
    ]


@pytest.mark.parametrize("shape", ["rising", "falling", "steady"])
def test_summary_equals_the_raw_samples_figures_over_the_widened_window(shape):
    samples = plant_samples(7, shape)
    window = TelemetryWindow(WINDOW_S)
    for i in range(0, len(samples), 37):  # batches as polls arrive
        window.add(samples[i : i + 37])
    now = samples[-1].ts
    summary = window.summary(["a", "b"], now)
    for tag in ("a", "b"):
        expected = raw_figures(widened(samples, tag, now - WINDOW_S, now))
        got = summary[tag]
        assert got["count"] == expected["count"]
        for figure in ("min", "mean", "max", "last"):
            assert got[figure] == pytest.approx(expected[figure], rel=1e-12), figure
        assert got["trend"] == expected["trend"]
        assert got["window_s"] == WINDOW_S
    assert summary["a"]["trend"] == shape
    # The widening is at most one bucket: the count is within one bucket's samples of the
    # exact window's (one sample a second here).
    exact = [s for s in samples if s.tag == "a" and now - WINDOW_S <= s.ts <= now]
    assert (
        0
        <= summary["a"]["count"] - len([s for s in exact if s.quality is Quality.GOOD])
        <= BUCKET_S + 1
    )


def test_baseline_is_the_mean_of_the_whole_buckets_before_the_finding():
    samples = plant_samples(11, "rising")
    window = TelemetryWindow(WINDOW_S)
    finding_ts = samples[len(samples) // 2].ts
    # The ticket opens as the finding arrives: the window has seen the samples up to it.
    window.add([s for s in samples if s.ts <= finding_ts + 2])
    bucket_start = math.floor(finding_ts / BUCKET_S) * BUCKET_S  # the finding's bucket: left out
    window_first = math.floor((finding_ts - WINDOW_S) / BUCKET_S) * BUCKET_S
    for tag in ("a", "b"):
        values = [v for t, v in widened(samples, tag, window_first, math.inf) if t < bucket_start]
        assert window.means([tag], before=finding_ts)[tag] == pytest.approx(
            np.mean(values), rel=1e-12
        )


def test_a_tag_silent_for_a_window_has_no_summary_and_late_samples_are_not_counted():
    window = TelemetryWindow(WINDOW_S)
    window.add([Sample("t", 1000.0 + i, 1.0) for i in range(10)])
    assert window.summary(["t"], now=1000.0 + 2 * WINDOW_S) == {}
    window.add([Sample("t", 5000.0, 2.0)])
    window.add([Sample("t", 5000.0 - 2 * WINDOW_S, 99.0)])  # older than the ring holds
    assert window.summary(["t"], now=5000.0)["t"] | {} == {
        "min": 2.0, "mean": 2.0, "max": 2.0, "last": 2.0, "count": 1, "trend": "steady",
        "window_s": WINDOW_S,
    }  # fmt: skip


def retained_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def test_memory_does_not_grow_with_the_samples_fed():
    tags = [f"dev-{d:03d}/r{r}" for d in range(10) for r in range(10)]
    window = TelemetryWindow(WINDOW_S)

    def feed(seconds: range) -> None:
        for t in seconds:
            window.add([Sample(tag, 1_700_000_000.0 + t, float(t % 17)) for tag in tags])

    feed(range(0, 60))  # every tag seen once: its per-tag constant is allocated
    before = retained_objects()
    feed(range(60, int(3 * WINDOW_S)))  # 1 740 samples more per tag, more than a window's
    after = retained_objects()
    # Nothing per sample is kept: the count of live objects does not change (a few objects of
    # the interpreter's own may come and go).
    assert after - before < 20
    assert window.tags == len(tags)
    summary = window.summary(tags[:1], 1_700_000_000.0 + 3 * WINDOW_S - 1)
    assert summary[tags[0]]["count"] == pytest.approx(WINDOW_S, abs=BUCKET_S + 1)
