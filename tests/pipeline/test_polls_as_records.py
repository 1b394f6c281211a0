"""A whole GOOD poll handed through the pipeline as one `Poll` record.

Two promises, each checked from the outside: every consumer given the runner's batch
(`SampleBatch`: polls and loose samples in arrival order) reaches exactly what it reaches
given the same samples one by one (rows stored, evidence figures, link and run-state changes,
detector input); and the hot consumers do it without making the polls' samples (the point of
the record: at 15 000 values/s a `Sample` per value was a tenth of the daemon's CPU).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from detectors.threshold import ThresholdDetector
from gateway.core.clock import ManualClock
from gateway.core.records import Finding, Poll, Quality, Sample, SampleBatch
from gateway.pipeline.record_queue import RecordQueue
from gateway.pipeline.runner import DetectorRunner
from gateway.store.sample_groups import ColumnCatalogue, pack, unpack_row
from gateway.ticketing.evidence import TelemetryWindow
from gateway.ticketing.noise import RunStates
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.topology import Link, LinkWatcher
from gateway.ticketing.verifier import watched_samples

DEVICES = ("press-1", "press-2", "press-3")
POINTS = 6
TAGS = {device: tuple(f"{device}.r{i}" for i in range(POINTS)) for device in DEVICES}


def poll_of(device: str, ts: float, rng: random.Random) -> Poll:
    return Poll(TAGS[device], ts, [round(rng.uniform(0.0, 100.0), 3) for _ in range(POINTS)])


def plant_batches(seed: int, seconds: int = 400) -> list[SampleBatch]:
    """A second per batch: each device's poll, mostly whole and GOOD (a `Poll`), sometimes
    with a BAD or UNCERTAIN point (then loose samples, as the driver makes them), and a
    device that is unreachable for a while (all its points BAD)."""
    rng = random.Random(seed)
    batches = []
    for second in range(seconds):
        parts: list[Poll | Sample] = []
        for k, device in enumerate(DEVICES):
            ts = 1_700_000_000.0 + second + 0.01 * k
            poll = poll_of(device, ts, rng)
            if device == "press-3" and 100 <= second < 130:  # unreachable
                parts += [Sample.bad(tag, ts, "no answer") for tag in TAGS[device]]
            elif rng.random() < 0.1:
                samples = list(poll.samples())
                i = rng.randrange(POINTS)
                if rng.random() < 0.5:
                    samples[i] = Sample.bad(samples[i].tag, ts, "exception 2")
                else:
                    samples[i] = Sample(samples[i].tag, ts, samples[i].value, Quality.UNCERTAIN)
                parts += samples
            else:
                parts.append(Poll(poll.tags, poll.ts, poll.values))  # samples not made yet
        batches.append(SampleBatch(parts))
    return batches


def flat(batch: SampleBatch) -> list[Sample]:
    """The batch's samples as new objects, so that nothing is shared with the polls."""
    return [Sample(s.tag, s.ts, s.value, s.quality, s.source_ts, s.reason) for s in batch]


def polls_in(batches: Sequence[SampleBatch]) -> list[Poll]:
    return [part for batch in batches for part in batch.parts if isinstance(part, Poll)]


# --- the record itself -------------------------------------------------------------------


def test_a_poll_is_the_sequence_of_the_samples_its_values_make() -> None:
    poll = Poll(("a.x", "a.y"), 5.0, [1.5, -2.0])
    assert len(poll) == 2
    assert poll.sample(1) == Sample("a.y", 5.0, -2.0)
    assert poll._samples is None  # one sample asked for: the others not made
    assert list(poll) == [Sample("a.x", 5.0, 1.5), Sample("a.y", 5.0, -2.0)]
    assert poll == [Sample("a.x", 5.0, 1.5), Sample("a.y", 5.0, -2.0)]
    assert [Sample("a.x", 5.0, 1.5), Sample("a.y", 5.0, -2.0)] == poll
    assert poll != [Sample("a.x", 5.0, 1.5)]
    assert all(s.quality is Quality.GOOD and s.reason is None and s.source_ts is None
               for s in poll)  # fmt: skip
    with pytest.raises(ValueError, match="2 tags but 1 values"):
        Poll(("a.x", "a.y"), 5.0, [1.0])


def test_a_batch_is_its_parts_samples_in_arrival_order() -> None:
    loose = Sample.bad("b.x", 6.0, "timeout")
    batch = SampleBatch([Poll(("a.x",), 5.0, [1.0]), loose, Poll(("c.x", "c.y"), 7.0, [2, 3])])
    assert len(batch) == 4
    assert [s.tag for s in batch] == ["a.x", "b.x", "c.x", "c.y"]
    assert batch.loose() == [loose]


# --- every consumer reaches what the samples one by one reach ----------------------------


def test_telemetry_rows_of_a_batch_are_the_rows_of_its_samples() -> None:
    batches = plant_batches(1)
    by_batch, by_samples = ColumnCatalogue(), ColumnCatalogue()
    for batch in batches:
        samples = flat(batch)
        rows, new = pack(batch, by_batch)
        expected_rows, expected_new = pack(samples, by_samples)
        assert sorted(rows) == sorted(expected_rows)
        assert new == expected_new
    # and what is stored reads back as the samples that went in
    last = batches[-1]
    rows, _ = pack(last, by_batch)
    read_back = [
        sample
        for row in rows
        for sample in unpack_row(row[0], by_batch.points(row[0]), (row[1], *row[2:]))
    ]
    assert sorted(read_back, key=lambda s: s.tag) == sorted(flat(last), key=lambda s: s.tag)


def test_evidence_figures_of_batches_are_the_figures_of_their_samples() -> None:
    batches = plant_batches(2)
    by_batch, by_samples = TelemetryWindow(120.0), TelemetryWindow(120.0)
    for batch in batches:
        by_batch.add(batch)
        by_samples.add(flat(batch))
    now = batches[-1].parts[-1].ts
    for device in DEVICES:  # a device at a time: a summary holds at most 16 tags
        tags = TAGS[device]
        got, expected = by_batch.summary(tags, now), by_samples.summary(tags, now)
        assert got.keys() == expected.keys() == set(tags)
        for tag in tags:
            for figure, value in expected[tag].items():
                if isinstance(value, float):
                    assert got[tag][figure] == pytest.approx(value, rel=1e-12), (tag, figure)
                else:
                    assert got[tag][figure] == value, (tag, figure)
        assert by_batch.means(tags, before=now - 60) == pytest.approx(
            by_samples.means(tags, before=now - 60), rel=1e-12
        )


def test_link_changes_of_batches_are_those_of_their_samples() -> None:
    line = Link("tcp-gw", "modbus_tcp", frozenset({"press-3"}), TAGS["press-3"])
    by_batch, by_samples = LinkWatcher([line]), LinkWatcher([line])
    seen = []
    for batch in plant_batches(3):
        got = by_batch.observe(batch)
        assert got == by_samples.observe(flat(batch))
        seen += [(change.lost, change.reason) for change in got]
    # press-3 unreachable for 30 s: lost once, back once, when its first whole poll came
    assert seen == [(True, "no answer"), (False, "answering again")]


def test_run_state_changes_of_batches_are_those_of_their_samples() -> None:
    profiles = {"press-1": AssetProfile("press-1", run_tag="press-1.r2", run_above=50.0)}
    by_batch, by_samples = RunStates(profiles), RunStates(profiles)
    changes = 0
    for batch in plant_batches(4):
        got = by_batch.observe(batch)
        assert got == by_samples.observe(flat(batch))
        changes += len(got)
    assert changes > 10  # the random r2 crosses 50 often: the comparison saw changes


def test_a_verification_watch_sees_the_samples_of_its_tags() -> None:
    watched = frozenset({"press-2.r1", "press-3.r4"})
    for batch in plant_batches(5, seconds=150):
        assert list(watched_samples(batch, watched)) == [
            s for s in flat(batch) if s.tag in watched
        ]


# --- and without making the polls' samples -------------------------------------------------


def test_the_hot_consumers_do_not_make_the_samples_of_whole_polls() -> None:
    catalogue, window = ColumnCatalogue(), TelemetryWindow(120.0)
    links = LinkWatcher([Link("tcp-gw", "modbus_tcp", frozenset({"press-3"}), TAGS["press-3"])])
    runs = RunStates({"press-1": AssetProfile("press-1", run_tag="press-1.r2", run_above=50.0)})
    batches = plant_batches(6)
    warm, measured = batches[:50], batches[50:]  # a device's first poll teaches its layout
    for batch in warm:
        pack(batch, catalogue)
        window.add(batch)
    for batch in measured:
        pack(batch, catalogue)
        window.add(batch)
        links.observe(batch)
        runs.observe(batch)
    polls = polls_in(measured)
    assert len(polls) > 900
    made = [poll for poll in polls if poll._samples is not None]
    assert made == []


class Sinks:
    def __init__(self) -> None:
        self.stored: list[Sequence[Sample]] = []
        self.findings: list[Finding] = []

    async def store(self, samples: Sequence[Sample]) -> None:
        self.stored.append(samples)

    async def on_finding(self, finding: Finding) -> None:
        self.findings.append(finding)


async def test_the_runner_routes_a_polls_wanted_values_without_making_the_others() -> None:
    queue = RecordQueue(maxsize=1000)
    sinks = Sinks()
    detector = ThresholdDetector(
        name="press-2.r3_hot", asset="press-2", signal_tag="press-2.r3", hi=80.0, deadband=1.0
    )
    runner = DetectorRunner(queue, [detector], sinks.on_finding, sinks.store, ManualClock())
    hot = Poll(TAGS["press-2"], 10.0, [0.0, 0.0, 0.0, 95.0, 0.0, 0.0])
    other = Poll(TAGS["press-1"], 10.0, [95.0] * POINTS)  # no detector wants press-1
    loose = Sample.bad("press-3.r0", 10.0, "exception 2")
    await queue.put_many(other)
    await queue.put_many(hot)
    queue.put_nowait(loose)
    task = asyncio.create_task(runner.run_detectors())
    try:
        async with asyncio.timeout(2):
            while runner.statistics().records < 2 * POINTS + 1:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
    finally:
        task.cancel()
    (finding,) = sinks.findings
    assert (finding.asset, finding.value, finding.ts) == ("press-2", 95.0, 10.0)
    assert other._samples is None and hot._samples is None  # only press-2.r3's sample made
    (stored,) = sinks.stored
    assert list(stored) == [*other, *hot, loose]  # every record stored, in arrival order
    assert runner.statistics().samples_stored == 2 * POINTS + 1

