"""The source task of a streaming endpoint: a CAN channel, an OPC UA subscription (DESIGN.md 3).

The counterpart of `PollingSource` for drivers that push: enter the driver, forward every record
it yields into the bounded queue, and when it fails, publish BAD samples for all its tags, log
once, back off with jitter and start again with a fresh driver from the factory.

Full-queue policy: the source waits (`await queue.put`), like every source; memory does not
grow here. While it waits it stops pulling from the driver, so each driver declares where the
backlog goes: the CAN driver keeps reading the bus into a bounded buffer and drops the oldest
frames, counted as overruns (see `protocols/can/driver.py`).

Failure and recovery: BAD samples are published once per failed attempt (a stream has no rate
to repeat them at), with the driver's reason. The device counts as back at the first record
after a reconnect, not at a successful enter: a CAN bus opens fine and then goes bus-off at
once, and logging "reachable" for that would print two lines per retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence

from gateway.core.clock import Clock
from gateway.core.errors import DeviceUnreachable, DriverError
from gateway.core.interfaces import QueueItem, Record, StreamingDriver
from gateway.core.plugins import Probe
from gateway.core.records import Tag

# One backoff policy for every source; the lead may move it to its own module.
from gateway.pipeline.quality import PointQuality, quality_statistics
from gateway.pipeline.statistics import DeviceStatistics, SourceState
from gateway.pipeline.supervision import (
    Backoff,
    Recovery,
    connect_within,
    failure_reason,
    log_outage,
    publish_bad,
)

log = logging.getLogger(__name__)

StreamingDriverFactory = Callable[[], StreamingDriver]

# Without a limit from the endpoint: a point silent this long after connecting is reported.
DEFAULT_SILENCE_LIMIT_S = 30.0


class StreamingSource:
    """Streams one endpoint into the queue until cancelled; see the module docstring."""

    def __init__(
        self,
        device_id: str,
        driver_factory: StreamingDriverFactory,
        queue: asyncio.Queue[QueueItem],
        clock: Clock,
        *,
        connect_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        probe: Probe | None = None,
        silence_limit_s: float | None = None,
    ) -> None:
        """`silence_limit_s`: how long after the first connection a configured point that
        delivered nothing is reported as never delivering (`gateway.pipeline.quality`)."""
        if connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be positive")
        self._device_id = device_id
        self._factory = driver_factory
        self._queue = queue
        self._clock = clock
        self._connect_timeout = connect_timeout_s
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._recovery = Recovery(probe)

        self._state = SourceState.STARTING
        self._records = 0
        self._errors = 0
        self._reconnects = 0
        self._quality = PointQuality(device_id)
        self._silence_limit = silence_limit_s or DEFAULT_SILENCE_LIMIT_S
        self._silence_timer: asyncio.TimerHandle | None = None
        self._last_error: str | None = None
        self._failures = 0  # consecutive failed attempts since the last record

    @property
    def name(self) -> str:
        """The task name, as the config reads (STYLE.md)."""
        return f"source[{self._device_id}]"

    @property
    def device_id(self) -> str:
        return self._device_id

    def statistics(self) -> tuple[DeviceStatistics, ...]:
        return (
            DeviceStatistics(
                device=self._device_id,
                state=self._state,
                reads=self._records,
                errors=self._errors,
                reconnects=self._reconnects,
                bad_values=self._quality.bad_samples,
                skipped_ticks=0,
                last_latency_s=None,
                last_error=self._last_error,
                **quality_statistics(self._quality),
            ),
        )

    async def run_source(self) -> None:
        """Connect, stream, back off and reconnect, until cancelled."""
        try:
            while True:
                driver = self._factory()
                tags = driver.tags()
                try:
                    failure = await self._connect(driver)
                    connect_failed = failure is not None
                    if failure is None:
                        failure = await self._stream_until_failure(driver)
                finally:
                    # Also after a failed enter: exit is idempotent and never raises (the
                    # driver contract), and a half-open bus or session must not leak.
                    await driver.__aexit__(None, None, None)
                await self._back_off(tags, failure, connect_failed=connect_failed)
        finally:
            self._state = SourceState.STOPPED
            if self._silence_timer is not None:
                self._silence_timer.cancel()

    async def _connect(self, driver: StreamingDriver) -> DriverError | None:
        failure = await connect_within(driver.__aenter__(), self._connect_timeout)
        if failure is None and self._silence_timer is None:
            # Silence counts from the first connection: one timer, no task.
            loop = asyncio.get_running_loop()
            now = loop.time()
            self._quality.expect((tag.id for tag in driver.tags()), self._silence_limit, now)
            self._silence_timer = loop.call_at(
                now + self._silence_limit, lambda: self._quality.check_silence(loop.time())
            )
        return failure

    async def _stream_until_failure(self, driver: StreamingDriver) -> DriverError:
        stream = driver.records()
        try:
            async for record in stream:
                if self._state is not SourceState.STREAMING:
                    self._on_first_record(driver)
                self._records += 1
                self._quality.observe_one(record)
                await self._queue.put(record)
        except DriverError as exc:
            return exc
        finally:
            await _close(stream)
        # A stream that simply ends is a lost connection too: start again.
        return DeviceUnreachable("the stream ended")

    def _on_first_record(self, driver: StreamingDriver) -> None:
        if self._state is SourceState.UNREACHABLE:
            self._reconnects += 1
            log.info(
                "Device `%s` reachable again after %d %s.",
                self._device_id,
                self._failures,
                "attempt" if self._failures == 1 else "attempts",
            )
        else:
            log.info("Device `%s` streaming from `%s`.", self._device_id, driver.endpoint)
        self._state = SourceState.STREAMING
        self._failures = 0

    async def _back_off(
        self, tags: Sequence[Tag], failure: DriverError, *, connect_failed: bool
    ) -> None:
        self._errors += 1
        reason = failure_reason(failure)
        self._last_error = reason
        delay = self._backoff.delay(self._failures, self._rng)
        self._failures += 1
        first = self._state is not SourceState.UNREACHABLE
        log_outage(log, f"Device `{self._device_id}`", reason, delay, first=first)
        self._state = SourceState.UNREACHABLE
        await publish_bad(self._queue, tags, self._clock.now(), reason)
        await self._recovery.wait(delay, connect_failed=connect_failed)


async def _close(stream: AsyncIterator[Record]) -> None:
    """Finish an async generator now, so its cleanup runs in this task and not at GC time."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
