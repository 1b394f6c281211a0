"""The detector runner: takes records off the bounded queue, stores raw telemetry locally,
routes each record to the detectors that want its tag, and hands findings to ticketing.

CPU-heavy detectors (waveforms) run in a worker thread so that polling stays on time
(DESIGN.md section 3); numpy releases the GIL for the FFTs. A detector that raises is disabled
and reported as a finding of its own; collection goes on (DESIGN.md section 5).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

from gateway.core.clock import Clock
from gateway.core.interfaces import Detector, FeatureDetector, QueueItem, Record
from gateway.core.records import (
    FaultCode,
    Finding,
    Poll,
    Priority,
    Sample,
    SampleBatch,
    Waveform,
    record_count,
)
from gateway.pipeline.record_queue import RecordQueue

log = logging.getLogger(__name__)


FindingSink = Callable[[Finding], Awaitable[None]]
TelemetrySink = Callable[[Sequence[Sample]], Awaitable[None]]
WaveformSink = Callable[[Waveform], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RunnerStatistics:
    records: int
    samples_stored: int
    waveforms: int
    findings: int
    detectors_disabled: int
    queue_depth: int
    detector_seconds: float


class DetectorRunner:
    """Consumes the records queue until cancelled; `drain()` empties it on shutdown."""

    def __init__(
        self,
        queue: asyncio.Queue[QueueItem],
        detectors: Sequence[Detector],
        on_finding: FindingSink,
        store_samples: TelemetrySink,
        clock: Clock,
        *,
        store_waveform: WaveformSink | None = None,
        batch_size: int = 500,
        linger_s: float = 0.0,
    ) -> None:
        """A batch is what is waiting when the runner gets to it, at most `batch_size`
        records (a few milliseconds of work on the event loop; the sources run between two
        batches). `linger_s` > 0 waits that
        long after the first record for more. The daemon does not linger: telemetry.db batches
        its own writes (`storage.telemetry_flush_s`), and a sleep per poll is one more
        wake-up of the process, which cost more CPU than the larger batches saved (at
        10 devices x 100 registers at 1 s: about 11 ms of CPU per 1000 registers/s with a
        0.25 s linger, about 9.5 without, the rest unchanged; 500 devices x 30 registers: no
        difference beyond the run-to-run noise)."""
        self._queue = queue
        self._on_finding = on_finding
        self._store_samples = store_samples
        self._store_waveform = store_waveform
        self._clock = clock
        self._batch_size = batch_size
        self._linger = linger_s
        # Taken off the queue and waiting for the linger to end; `drain()` takes them too.
        self._held: list[QueueItem] = []
        self._by_tag: dict[str, list[Detector]] = defaultdict(list)
        for detector in detectors:
            for tag in detector.inputs:
                self._by_tag[tag].append(detector)
        # Per poll tag tuple, the positions some detector wants (`_wanted_in`).
        self._wanted: dict[tuple[str, ...], list[tuple[int, list[Detector]]]] = {}
        self._disabled: set[str] = set()
        self._records = 0
        self._stored = 0
        self._waveforms = 0
        self._findings = 0
        self._detector_seconds = 0.0
        self._failed_before: set[str] = set()

    async def run_detectors(self) -> None:
        while True:
            self._held = [await self._queue.get()]
            if self._linger > 0 and self._queue.qsize() < self._batch_size - 1:
                await asyncio.sleep(self._linger)
            batch, self._held = self._held, []
            # Take what is already waiting, so telemetry is written in batches: counted once,
            # not `empty()` and `len()` per record. The batch is empty when `drain()`
            # took the held records meanwhile.
            if batch:
                room = min(self._queue.qsize(), self._batch_size - record_count(batch[0]))
                if isinstance(self._queue, RecordQueue):
                    batch += self._queue.get_many_nowait(room)
                else:
                    take = self._queue.get_nowait
                    batch += [take() for _ in range(room)]
                await self._process(batch)
            if not self._queue.empty():
                # `Queue.get` does not suspend while records wait, and storing may not either:
                # without this a backlog is worked off in one step of the event loop, and every
                # poll due meanwhile waits for all of it (p99 jitter of 150-190 ms at
                # 100 devices on a loaded machine). One batch at a time, polls in between.
                await asyncio.sleep(0)

    def resume_failed(self, detector_names: Sequence[str]) -> None:
        """Detectors whose `detector.failed` condition was active at the last stop: the first
        record each of them handles without an error reports that condition cleared."""
        self._failed_before = set(detector_names)

    async def drain(self) -> None:
        """Process whatever is still queued (used on shutdown, after the sources stopped)."""
        batch, self._held = self._held, []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._process(batch)

    def statistics(self) -> RunnerStatistics:
        return RunnerStatistics(
            records=self._records,
            samples_stored=self._stored,
            waveforms=self._waveforms,
            findings=self._findings,
            detectors_disabled=len(self._disabled),
            queue_depth=self._queue.qsize(),
            detector_seconds=self._detector_seconds,
        )

    async def _process(self, batch: list[QueueItem]) -> None:
        kinds = list(map(type, batch))
        if not kinds.count(Waveform):
            # Samples and polls only (the usual batch).
            await self._process_samples(SampleBatch(cast("list[Poll | Sample]", batch)))
            return
        self._records += sum(map(record_count, batch))
        samples = SampleBatch([r for r in batch if not isinstance(r, Waveform)])
        if samples:
            await self._store_samples(samples)
            self._stored += len(samples)
        for item in batch:
            for record in item.samples() if isinstance(item, Poll) else (item,):
                if isinstance(record, Waveform):
                    self._waveforms += 1
                    if self._store_waveform is not None:
                        await self._store_waveform(record)
                for detector in self._by_tag.get(record.tag, ()):
                    if not await self._update(detector, record):
                        continue
                    if isinstance(record, Waveform) and isinstance(detector, FeatureDetector):
                        derived = detector.feature_samples()
                        if derived:
                            await self._store_samples(derived)
                            self._stored += len(derived)

    async def _process_samples(self, batch: SampleBatch) -> None:
        """A batch of samples and polls only (the usual one): what `_process` does, visiting
        only the samples some detector wants. For a poll their positions are known per device
        (its tag tuple) and only their samples are made."""
        self._records += len(batch)
        await self._store_samples(batch)
        self._stored += len(batch)
        by_tag = self._by_tag
        for part in batch.parts:
            if isinstance(part, Poll):
                for index, detectors in self._wanted_in(part.tags):
                    sample = part.sample(index)
                    for detector in detectors:
                        await self._update(detector, sample)
                continue
            for detector in by_tag.get(part.tag, ()):
                await self._update(detector, part)

    def _wanted_in(self, tags: tuple[str, ...]) -> list[tuple[int, list[Detector]]]:
        """The positions of a poll's tags that detectors want, and those detectors; kept
        per tag tuple (one entry per device: its polls share their tuple, so the lookup's
        comparison is one identity check)."""
        wanted = self._wanted.get(tags)
        if wanted is None:
            by_tag = self._by_tag
            wanted = [(i, by_tag[tag]) for i, tag in enumerate(tags) if by_tag.get(tag)]
            self._wanted[tags] = wanted
        return wanted

    async def _update(self, detector: Detector, record: Record) -> bool:
        """Run one detector on one record and hand on its findings; False when the detector
        is disabled (it is not run)."""
        if detector.name in self._disabled:
            return False
        findings = await self._run_one(detector, record)
        if detector.name in self._failed_before and detector.name not in self._disabled:
            self._failed_before.discard(detector.name)
            findings = [self._working_again(detector, record), *findings]
        for finding in findings:
            self._findings += 1
            await self._on_finding(finding)
        return True

    @staticmethod
    def _working_again(detector: Detector, record: Record) -> Finding:
        return Finding(
            asset=detector.asset,
            fault_code=FaultCode.DETECTOR_FAILED,
            severity=Priority.P3,
            score=0.0,
            detector=detector.name,
            message=f"Detector {detector.name} is evaluating its rule again.",
            ts=record.ts,
            active=False,
        )

    async def _run_one(self, detector: Detector, record: Record) -> list[Finding]:
        started = self._clock.monotonic()
        try:
            if isinstance(record, Waveform):
                findings = await asyncio.to_thread(detector.update, record)
            else:
                findings = detector.update(record)
        except Exception as exc:
            self._disabled.add(detector.name)
            log.error(
                "Detector `%s` failed on `%s` and is disabled: %r",
                detector.name,
                record.tag,
                exc,
                exc_info=True,
            )
            asset = detector.asset
            return [
                Finding(
                    asset=asset,
                    fault_code=FaultCode.DETECTOR_FAILED,
                    severity=Priority.P3,
                    score=1.0,
                    detector=detector.name,
                    message=(
                        f"Detector {detector.name} stopped after an internal error "
                        f"({type(exc).__name__}); its rule is not being evaluated."
                    ),
                    ts=record.ts,
                )
            ]
        finally:
            self._detector_seconds += self._clock.monotonic() - started
        return findings
