"""The evidence window keeps the time sums once per device (issue 17, memory): the figures
stay those of the raw samples when a device's tags do not all answer every poll (BAD, not
finite, a deadband), when a tag has two samples in one poll, when a poll arrives in two
batches or a sample arrives late, and the tags of a device that answer every poll cost about
half of what a tag with its own time sums costs."""

import math
import random
import tracemalloc

import pytest

from gateway.core.records import Quality, Sample
from gateway.ticketing.evidence import BUCKETS_PER_WINDOW, TelemetryWindow
from tests.ticketing.test_evidence_window import raw_figures, widened

WINDOW_S = 600.0
BUCKET_S = WINDOW_S / BUCKETS_PER_WINDOW
T0 = 1_700_000_000.0


def irregular_plant(seed: int) -> tuple[list[list[Sample]], list[str]]:
    """Batches of polls of three 5-point devices and a tag without a device, at 1 s with
    jitter, over three windows. Half a window in, d0 and d1 start to show every irregularity
    the window must survive (a derived tag of d0 too); d2 answers every poll throughout."""
    rng = random.Random(seed)
    tags = [f"d{d}.p{p}" for d in range(3) for p in range(5)] + ["lone", "d0.p0.rms"]
    batches: list[list[Sample]] = []
    late: list[Sample] = []
    for i in range(int(3 * WINDOW_S)):
        batch: list[Sample] = []
        for d in range(3):
            ts = T0 + i + d * 0.3 + rng.uniform(-0.05, 0.05)
            odd = d < 2 and i > WINDOW_S / 2
            poll = []
            for p in range(5):
                tag, value = f"d{d}.p{p}", 50.0 + 0.02 * i * (p - 2) + rng.gauss(0, 0.5)
                roll = rng.random() if odd else 1.0
                if roll < 0.001 * (p + 1):
                    poll.append(Sample.bad(tag, ts, "timeout"))
                elif roll < 0.0015 * (p + 1):
                    poll.append(Sample(tag, ts, math.nan, Quality.GOOD))
                elif roll < 0.002 * (p + 1):
                    continue  # a deadband held it back
                else:
                    poll.append(Sample(tag, ts, value))
                if odd and rng.random() < 0.0005:
                    poll.append(Sample(tag, ts, value + 1.0))  # twice in one poll
            if odd and rng.random() < 0.002:  # the poll arrives in two batches
                cut = rng.randrange(len(poll) + 1)
                batch += poll[:cut]
                batches.append(batch)
                batch = poll[cut:]
            else:
                batch += poll
            if odd and rng.random() < 0.002 and poll:
                late.append(Sample(poll[0].tag, ts - rng.uniform(0.5, 3.0), 49.0))
        batch.append(Sample("lone", T0 + i + 0.7, 10.0 + rng.gauss(0, 0.1)))
        if i % 10 == 0 and i > 1.2 * WINDOW_S:
            batch.append(Sample("d0.p0.rms", T0 + i + 0.9, 1.0 + 0.001 * i))
        if late and rng.random() < 0.3:
            batch += late
            late = []
        batches.append(batch)
    return batches, tags


def _usable(sample: Sample) -> bool:
    value = sample.value
    return sample.quality is not Quality.BAD and value is not None and math.isfinite(value)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figures_equal_the_raw_samples_whatever_the_polls_miss(seed):
    batches, tags = irregular_plant(seed)
    window = TelemetryWindow(WINDOW_S)
    for batch in batches:
        window.add(batch)
    # d2 kept to its timeline; d0's and d1's tags each left theirs at one irregularity; the
    # lone tag and d0.p0's derived tag follow timelines of their own.
    assert sorted(len(t.members) for t in window._timelines) == [0, 0, 1, 1, 5]
    samples = [s for batch in batches for s in batch]
    now = max(s.ts for s in samples)
    summary = window.summary(tags, now)
    assert set(summary) == set(tags[:16])  # at most 16 tags in a snapshot
    for tag in summary:
        points = sorted(widened(samples, tag, now - WINDOW_S, now))  # by time: `last` is newest
        expected = raw_figures(points)
        got = summary[tag]
        assert got["count"] == expected["count"], tag
        for figure in ("min", "max", "last"):
            assert got[figure] == expected[figure], (tag, figure)
        assert got["mean"] == pytest.approx(expected["mean"], rel=1e-12), tag
        assert got["trend"] == expected["trend"], tag
    before = T0 + 1.5 * WINDOW_S + 7.3
    fed = [s for s in samples if s.ts <= before + 2]
    window = TelemetryWindow(WINDOW_S)
    for batch in batches:
        window.add([s for s in batch if s.ts <= before + 2])
    bucket_start = math.floor(before / BUCKET_S) * BUCKET_S
    first = math.floor((before - WINDOW_S) / BUCKET_S) * BUCKET_S
    means = window.means(tags, before=before)
    for tag in tags:
        values = [v for t, v in widened(fed, tag, first, math.inf) if t < bucket_start]
        assert means[tag] == pytest.approx(sum(values) / len(values), rel=1e-12), tag


def test_a_polled_device_whose_tags_all_answer_costs_about_half_per_tag():
    # 100 devices x 30 points polled together: the time sums are the device's, once. The
    # samples come in batches of a few hundred, as the detector runner hands them over,
    # which cut polls in two.
    tags = [f"dev-{d:03d}.r{r}" for d in range(100) for r in range(30)]
    window = TelemetryWindow(WINDOW_S)
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        fed = [
            Sample(tag, T0 + t + int(tag[4:7]) * 0.01, 1.0 + t) for t in range(20) for tag in tags
        ]
        for i in range(0, len(fed), 470):
            window.add(fed[i : i + 470])
        del fed
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_tag = (end - start) / len(tags)
    # 4 sums in 11 buckets and a header of 5, in 8-byte cells, with the array's own: a tag
    # with its own time sums (5 more per bucket) took 880 bytes.
    assert per_tag < 560, per_tag
    assert window.summary([tags[0]], T0 + 20)[tags[0]]["count"] == 20


def test_a_tag_missing_from_the_poll_in_which_another_came_twice_has_its_own_count():
    window = TelemetryWindow(WINDOW_S)
    window.add([Sample("m.a", T0, 1.0), Sample("m.b", T0, 2.0), Sample("m.c", T0, 3.0)])
    window.add([Sample("m.a", T0 + 1, 1.0), Sample("m.a", T0 + 1, 5.0), Sample("m.b", T0 + 1, 2.0)])
    window.add([Sample("m.a", T0 + 2, 1.0), Sample("m.b", T0 + 2, 2.0), Sample("m.c", T0 + 2, 9.0)])
    summary = window.summary(["m.a", "m.b", "m.c"], T0 + 2)
    assert [summary[t]["count"] for t in ("m.a", "m.b", "m.c")] == [4, 3, 2]
    assert summary["m.a"]["max"] == 5.0 and summary["m.c"]["mean"] == 6.0
