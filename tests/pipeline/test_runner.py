"""DetectorRunner: batching with a linger, and `drain()` on shutdown taking every record,
including those already taken off the queue and held while the linger runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from detectors.threshold import ThresholdDetector
from gateway.core.clock import ManualClock
from gateway.core.interfaces import Record
from gateway.core.records import FaultCode, Finding, Sample
from gateway.pipeline.runner import DetectorRunner

TAG = "press-3.oil_temp"


class Sinks:
    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []
        self.findings: list[Finding] = []

    async def store(self, samples: Sequence[Sample]) -> None:
        self.batches.append(list(samples))

    async def on_finding(self, finding: Finding) -> None:
        self.findings.append(finding)


def make_runner(queue: asyncio.Queue[Record], sinks: Sinks, *, linger_s: float) -> DetectorRunner:
    detector = ThresholdDetector(
        name="press-3.oil_hot", asset="press-3", signal_tag=TAG, hi=80.0, deadband=1.0
    )
    return DetectorRunner(
        queue, [detector], sinks.on_finding, sinks.store, ManualClock(), linger_s=linger_s
    )


async def wait_until_taken(queue: asyncio.Queue[Record]) -> None:
    async with asyncio.timeout(2):
        while not queue.empty():  # noqa: ASYNC110 (the runner takes it on its own schedule)
            await asyncio.sleep(0.001)


async def test_drain_processes_the_records_held_by_the_linger() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    sinks = Sinks()
    runner = make_runner(queue, sinks, linger_s=30.0)  # far longer than the test
    task = asyncio.create_task(runner.run_detectors(), name="detectors")
    try:
        hot = Sample(TAG, 10.0, 95.0)
        queue.put_nowait(hot)
        await wait_until_taken(queue)  # held by the runner, lingering for more
        assert sinks.batches == []
        late = Sample(TAG, 11.0, 96.0)
        queue.put_nowait(late)  # still queued when the sources stop
        await runner.drain()
        assert sinks.batches == [[hot, late]]
        assert [f.active for f in sinks.findings] == [True]  # the detector saw them too
        assert runner.statistics().records == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_drained_batch_is_not_processed_again_when_the_linger_ends() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    sinks = Sinks()
    runner = make_runner(queue, sinks, linger_s=0.02)
    task = asyncio.create_task(runner.run_detectors(), name="detectors")
    try:
        sample = Sample(TAG, 10.0, 20.0)
        queue.put_nowait(sample)
        await wait_until_taken(queue)
        await runner.drain()
        await asyncio.sleep(0.06)  # the linger has ended; nothing is left to take
        assert sinks.batches == [[sample]]
        assert runner.statistics().records == 1
        # The loop carries on normally afterwards.
        later = Sample(TAG, 12.0, 21.0)
        queue.put_nowait(later)
        async with asyncio.timeout(2):
            while len(sinks.batches) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        assert sinks.batches == [[sample], [later]]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_linger_collects_several_polls_into_one_batch() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    sinks = Sinks()
    runner = make_runner(queue, sinks, linger_s=0.05)
    task = asyncio.create_task(runner.run_detectors(), name="detectors")
    try:
        first = [Sample(TAG, 1.0, 20.0), Sample("press-3.flow", 1.0, 3.0)]
        for record in first:
            queue.put_nowait(record)
        await asyncio.sleep(0.01)  # a second poll arrives within the linger
        second = [Sample(TAG, 2.0, 21.0)]
        queue.put_nowait(second[0])
        async with asyncio.timeout(2):
            while not sinks.batches:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        assert sinks.batches == [first + second]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_features_derived_from_a_waveform_are_stored_like_measured_samples() -> None:
    # The vibration family's velocity RMS, kurtosis... of each analysed block go to the same
    # sink as measured samples (telemetry, ticketing's evidence and verification).
    import numpy as np

    from detectors.vibration import VibrationDetector
    from gateway.core.records import Waveform

    fs, n = 25_600.0, 16_384
    t = np.arange(n) / fs
    block = 0.05 * np.sin(2 * np.pi * 29.95 * t) + 0.01 * np.random.default_rng(1).normal(size=n)
    detector = VibrationDetector(asset="pump-1", tag_id="pump-1.vib", fixed_rpm=1797.0)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10)
    sinks = Sinks()
    runner = DetectorRunner(queue, [detector], sinks.on_finding, sinks.store, ManualClock())
    queue.put_nowait(Waveform("pump-1.vib", 42.0, fs, block, "g"))
    await runner.drain()
    (derived,) = sinks.batches
    by_tag = {s.tag: s for s in derived}
    assert set(by_tag) == {
        f"pump-1.vib.{name}"
        for name in ("velocity_rms_mm_s", "accel_rms_g", "accel_peak_g", "crest_factor",
                     "kurtosis")
    }  # fmt: skip
    assert all(s.ts == 42.0 for s in derived)
    assert by_tag["pump-1.vib.accel_rms_g"].value == pytest.approx(0.0367, rel=0.05)
    assert runner.statistics().samples_stored == 5


class BrokenDetector:
    """A detector whose update raises, on a tag of a device whose id is not the asset's."""

    name = "pump-1-vib.spectrum"
    asset = "pump-1"
    derived_tags = ()
    inputs = frozenset({"pump-1-vib.accel"})

    def update(self, record: Record) -> list[Finding]:
        raise ZeroDivisionError("a bug")


async def test_a_failing_detector_is_disabled_and_reported_under_its_own_asset() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    sinks = Sinks()
    runner = DetectorRunner(
        queue, [BrokenDetector()], sinks.on_finding, sinks.store, ManualClock()
    )
    task = asyncio.create_task(runner.run_detectors(), name="detectors")
    try:
        queue.put_nowait(Sample("pump-1-vib.accel", 10.0, 0.5))
        queue.put_nowait(Sample("pump-1-vib.accel", 11.0, 0.6))
        await wait_until_taken(queue)
        await runner.drain()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # One finding, for the asset the detector watches (not the device id `pump-1-vib`),
    # and the disabled detector sees no second record.
    assert [(f.asset, f.fault_code, f.detector) for f in sinks.findings] == [
        ("pump-1", FaultCode.DETECTOR_FAILED, "pump-1-vib.spectrum")
    ]
    assert runner.statistics().detectors_disabled == 1


async def test_a_detector_whose_failure_was_active_at_the_stop_reports_it_cleared_once() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    sinks = Sinks()
    runner = make_runner(queue, sinks, linger_s=0.0)
    runner.resume_failed(["press-3.oil_hot"])
    task = asyncio.create_task(runner.run_detectors(), name="detectors")
    try:
        for ts in (10.0, 11.0):
            queue.put_nowait(Sample(TAG, ts, 60.0))
        await wait_until_taken(queue)
        await runner.drain()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [(f.fault_code, f.active, f.asset, f.ts) for f in sinks.findings] == [
        (FaultCode.DETECTOR_FAILED, False, "press-3", 10.0)
    ]


async def test_a_backlog_is_worked_off_one_batch_at_a_time_with_the_sources_in_between() -> None:
    """Issue 17 (poll jitter): `Queue.get` does not suspend while records wait, and a sink
    may not either; the runner must still let other tasks (the polling sources) run between
    two batches instead of working off the whole backlog in one step of the event loop."""
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=5000)
    sinks = Sinks()
    runner = DetectorRunner(queue, [], sinks.on_finding, sinks.store, ManualClock(), batch_size=500)
    for i in range(2000):  # four batches waiting
        queue.put_nowait(Sample(TAG, float(i), 20.0))
    seen_by_a_source: list[int] = []

    async def source() -> None:  # a poll that came due: it runs as soon as the loop lets it
        while len(seen_by_a_source) < 4:
            seen_by_a_source.append(len(sinks.batches))
            await asyncio.sleep(0)

    task = asyncio.create_task(runner.run_detectors(), name="detectors")
    other = asyncio.create_task(source())
    try:
        await wait_until_taken(queue)
        await other
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [len(b) for b in sinks.batches] == [500, 500, 500, 500]
    # The source ran while batches were still waiting, not only after the last one.
    assert seen_by_a_source[:3] == [1, 2, 3]
