"""The source task of a polling endpoint (DESIGN.md section 3).

The framework owns what every protocol would otherwise repeat: the fixed-rate schedule, the
connect and read timeouts, exponential backoff with jitter, BAD samples while the device cannot
be read, and one log line per change of state. The driver only talks to its device; it is built
fresh by a factory for every connection attempt, so no half-broken client state survives a
reconnect.

Scheduling runs on the event loop's clock (the one `asyncio.sleep` uses); the injected Clock
stamps the records. A test can therefore use a ManualClock for timestamps and short real
periods for the schedule.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.core.clock import Clock
from gateway.core.errors import DeviceTimeout, DeviceUnreachable, DriverError
from gateway.core.interfaces import LineUnit, PollingDriver, QueueItem, Record, SharedLine
from gateway.core.plugins import Probe
from gateway.core.records import Poll, Tag
from gateway.core.ticks import rounded_up, sleep_until, within
from gateway.pipeline.quality import PointQuality, quality_statistics
from gateway.pipeline.record_queue import RecordQueue
from gateway.pipeline.statistics import DeviceStatistics, SourceState
from gateway.pipeline.supervision import (
    Backoff,
    Recovery,
    connect_within,
    failure_reason,
    format_seconds,
    log_outage,
    publish_bad,
)

log = logging.getLogger(__name__)

DriverFactory = Callable[[], PollingDriver]

# The schedules of all sources start on this lattice of the loop's clock (a grid starts at
# each (re)connection, rounded down to it), and each source sleeps until its tick exactly, so
# the sources whose grids share a slot are woken together: one wake-up of the process for
# all of them instead of one each. On the 2-core development VM a wake-up of the idle daemon
# cost 150-250 us of CPU, about as much as a poll of 30 registers, and 500 devices at 1 s
# woke it 500 times a second. The plant's sources are also staggered a few to a phase
# (`sources.DEVICES_PER_PHASE`); 20 ms delays a first poll's successor by less than that.
TICK_LATTICE_S = 0.02

# Backoff jitter only: one generator for every source (each holds 2.5 KB of state, 1.2 MB for
# 500 devices). Sources run on one event loop, so sharing it is safe.
_BACKOFF_RNG = random.Random()


class PollingSource:
    """Polls one endpoint at a fixed rate until cancelled; see the module docstring."""

    def __init__(
        self,
        device_id: str,
        driver_factory: DriverFactory,
        queue: asyncio.Queue[QueueItem],
        clock: Clock,
        *,
        period_s: float,
        timeout_s: float,
        backoff: Backoff | None = None,
        phase_s: float = 0.0,
        rng: random.Random | None = None,
        probe: Probe | None = None,
    ) -> None:
        """`timeout_s` bounds one connect and one whole read (the driver's own per-request
        timeouts should be shorter). `phase_s` delays the first poll, to stagger devices that
        share a period. `probe` tells, between backoff steps, that the device is
        reachable again (`Recovery`)."""
        if period_s <= 0 or timeout_s <= 0 or phase_s < 0:
            raise ValueError("period_s and timeout_s must be positive, phase_s not negative")
        self._device_id = device_id
        self._factory = driver_factory
        self._queue = queue
        self._clock = clock
        self._period = period_s
        self._timeout = timeout_s
        self._backoff = backoff or Backoff()
        self._phase = phase_s
        self._rng = rng or _BACKOFF_RNG
        self._recovery = Recovery(probe)

        self._state = SourceState.STARTING
        self._polls = 0
        self._errors = 0
        self._reconnects = 0
        self._quality = PointQuality(device_id)
        self._skipped = 0
        self._last_latency: float | None = None
        self._last_error: str | None = None
        self._failures = 0  # consecutive failed attempts since the last good read
        self._next_tick = 0.0

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
                reads=self._polls,
                errors=self._errors,
                reconnects=self._reconnects,
                bad_values=self._quality.bad_samples,
                skipped_ticks=self._skipped,
                last_latency_s=self._last_latency,
                last_error=self._last_error,
                **quality_statistics(self._quality),
            ),
        )

    async def run_source(self) -> None:
        """Connect, poll, back off and reconnect, until cancelled."""
        await asyncio.sleep(self._phase)
        try:
            while True:
                driver = self._factory()
                tags = driver.tags()
                try:
                    failure = await self._connect(driver)
                    connect_failed = failure is not None
                    if failure is None:
                        failure = await self._poll_until_failure(driver)
                finally:
                    # Also after a failed enter: exit is idempotent and never raises (the
                    # PollingDriver contract), and a half-open connection must not leak.
                    await driver.__aexit__(None, None, None)
                await self._back_off(tags, failure, connect_failed=connect_failed)
        finally:
            self._state = SourceState.STOPPED

    async def _connect(self, driver: PollingDriver) -> DriverError | None:
        return await connect_within(driver.__aenter__(), self._timeout)

    async def _poll_until_failure(self, driver: PollingDriver) -> DriverError:
        loop = asyncio.get_running_loop()
        # The grid starts at each (re)connection, so time spent connecting or backing off is
        # not counted as skipped ticks; on the shared lattice, so that the sources of one slot
        # wake together (`TICK_LATTICE_S`).
        self._next_tick = math.floor(loop.time() / TICK_LATTICE_S) * TICK_LATTICE_S
        while True:
            started = loop.time()
            # Rounded up, so that the polls of a slot share one timer (`ticks.within`): the
            # bound is `timeout` to 20 ms more.
            deadline = rounded_up(started + self._timeout)
            try:
                # Not `wait_for`: no task per poll, and a cancel arriving as the read
                # completes is not swallowed.
                async with within(loop, deadline):
                    records = await driver.read()
            except TimeoutError:
                return DeviceTimeout(f"no answer within {format_seconds(self._timeout)} s")
            except DriverError as exc:
                return exc
            self._last_latency = loop.time() - started
            self._on_good_read(driver, records)
            await self._hand_off(records)
            del records  # not held over the sleep: a poll's records for every device
            await self._sleep_until_next_tick()

    async def _hand_off(self, records: Sequence[Record]) -> None:
        """What `Queue.put` does, without a coroutine per record (at 15 000 records/s),
        and with one room check per poll rather than two per record: wait only while
        the queue is full, so back-pressure holds."""
        queue = self._queue
        if isinstance(queue, RecordQueue):
            await queue.put_many(records)  # the same, once per poll (a `Poll` as one item)
            return
        if isinstance(records, Poll):
            records = records.samples()  # a plain queue is bounded in items: one per record
        if queue.maxsize <= 0 or queue.maxsize - queue.qsize() >= len(records):
            put = queue.put_nowait
            for record in records:
                put(record)
        else:
            for record in records:
                await queue.put(record)  # suspends only while the queue is full

    def _on_good_read(self, driver: PollingDriver, records: Sequence[Record]) -> None:
        self._polls += 1
        self._quality.observe(records)
        if self._state is SourceState.UNREACHABLE:
            self._reconnects += 1
            log.info(
                "Device `%s` reachable %safter %d %s.",
                self._device_id,
                "again " if self._polls > 1 else "",
                self._failures,
                "attempt" if self._failures == 1 else "attempts",
            )
        elif self._state is SourceState.STARTING:
            log.info(
                "Device `%s` connected at `%s`; polling every %s s.",
                self._device_id,
                driver.endpoint,
                format_seconds(self._period),
            )
        self._state = SourceState.POLLING
        self._failures = 0

    async def _back_off(
        self, tags: Sequence[Tag], failure: DriverError, *, connect_failed: bool
    ) -> None:
        """Publish BAD samples at the poll rate until the retry is due, or the device is
        seen back."""
        self._errors += 1
        reason = failure_reason(failure)
        self._last_error = reason
        delay = self._backoff.delay(self._failures, self._rng)
        self._failures += 1
        first = self._state is not SourceState.UNREACHABLE
        log_outage(log, f"Device `{self._device_id}`", reason, delay, first=first)
        self._state = SourceState.UNREACHABLE
        # Each failure is followed by exactly one retry, so failures count the attempts.

        async def bad() -> None:
            await self._publish_bad(tags, reason)

        await self._recovery.wait(
            delay, connect_failed=connect_failed, every_s=self._period, on_tick=bad
        )

    async def _publish_bad(self, tags: Sequence[Tag], reason: str) -> None:
        await publish_bad(self._queue, tags, self._clock.now(), reason)

    def _next_tick_after(self, now: float) -> float:
        """The first tick of the fixed-rate grid strictly after `now`."""
        ticks = math.floor((now - self._next_tick) / self._period) + 1
        return self._next_tick + max(ticks, 0) * self._period

    async def _sleep_until_next_tick(self) -> None:
        """Advance the grid by one period; ticks already past are skipped, never run late."""
        loop = asyncio.get_running_loop()
        self._next_tick += self._period
        now = loop.time()
        if now >= self._next_tick:
            due = self._next_tick_after(now)
            self._skipped += round((due - self._next_tick) / self._period)
            self._next_tick = due
        await sleep_until(loop, self._next_tick)


def stagger_phases(
    device_ids: Sequence[str], period_s: float, *, per_phase: int = 1
) -> dict[str, float]:
    """Start offsets spreading devices that share a period evenly over it, so that
    500 devices at 1 s send 500 requests spread over the second, not one burst. Devices go
    `per_phase` to a phase (consecutive ones together), as few phases as that allows: the
    devices of one phase are woken and polled together. The order is the given one, so the
    same config always gives the same phases."""
    if period_s <= 0:
        raise ValueError(f"period_s must be positive, not {period_s}")
    if per_phase < 1:
        raise ValueError(f"per_phase must be at least 1, not {per_phase}")
    count = len(device_ids)
    phases = -(-count // per_phase)  # ceil
    return {
        device_id: period_s * (i * phases // count) / phases
        for i, device_id in enumerate(device_ids)
    }


@dataclass(slots=True)
class _UnitSchedule:
    unit: LineUnit
    period: float
    due: float
    failures: int = 0
    polls: int = 0
    errors: int = 0
    degraded: bool = False
    quality: PointQuality | None = None


class SharedLineSource:
    """Polls every unit of one shared line from one task, one read at a time.

    Each unit keeps its own fixed-rate schedule. A unit failing `degrade_after` times in a
    row is degraded: probed on the backoff schedule instead of every period, and only when
    the probe (at worst its timeout) fits before the next healthy unit is due, so a dead
    unit cannot make the live ones late. A failure of the line itself (the port cannot be
    opened or is lost) backs off the whole line with BAD samples for every unit.
    """

    def __init__(
        self,
        line_id: str,
        line_factory: Callable[[], SharedLine],
        queue: asyncio.Queue[QueueItem],
        clock: Clock,
        *,
        periods_s: Mapping[str, float],
        default_period_s: float = 1.0,
        backoff: Backoff | None = None,
        degrade_after: int = 3,
        rng: random.Random | None = None,
        probe: Probe | None = None,
    ) -> None:
        if degrade_after < 1 or default_period_s <= 0 or any(p <= 0 for p in periods_s.values()):
            raise ValueError("periods must be positive and degrade_after at least 1")
        self._line_id = line_id
        self._factory = line_factory
        self._queue = queue
        self._clock = clock
        self._periods = dict(periods_s)
        self._default_period = default_period_s
        self._backoff = backoff or Backoff()
        self._degrade_after = degrade_after
        self._rng = rng or _BACKOFF_RNG
        self._schedules: dict[str, _UnitSchedule] = {}
        self._line_failures = 0
        self._recovery = Recovery(probe)
        self.state = SourceState.STARTING

    @property
    def name(self) -> str:
        return f"source[{self._line_id}]"

    def statistics(self) -> tuple[DeviceStatistics, ...]:
        return tuple(
            DeviceStatistics(
                device=s.unit.device_id,
                state=self._unit_state(s),
                reads=s.polls,
                errors=s.errors,
                reconnects=0,
                bad_values=s.quality.bad_samples if s.quality else 0,
                skipped_ticks=0,
                last_latency_s=None,
                last_error=None,
                **quality_statistics(s.quality),
            )
            for s in self._schedules.values()
        )

    def _unit_state(self, schedule: _UnitSchedule) -> SourceState:
        if self.state is not SourceState.POLLING:
            return self.state  # the line itself is down, starting or stopped
        return SourceState.DEGRADED if schedule.degraded else SourceState.POLLING

    async def run_source(self) -> None:
        """Open the line, poll its units, reopen with backoff, until cancelled."""
        try:
            while True:
                line = self._factory()
                try:
                    failure = await self._open(line)
                    open_failed = failure is not None
                    if failure is None:
                        failure = await self._poll_units(line)
                finally:
                    await line.__aexit__(None, None, None)
                await self._back_off_line(line, failure, open_failed=open_failed)
        finally:
            self.state = SourceState.STOPPED

    async def _open(self, line: SharedLine) -> DriverError | None:
        try:
            await line.__aenter__()
        except DriverError as exc:
            return exc
        if self.state is SourceState.UNREACHABLE:
            log.info("Line `%s` open again at `%s`.", self._line_id, line.endpoint)
        else:
            log.info("Line `%s` open at `%s`.", self._line_id, line.endpoint)
        self.state = SourceState.POLLING
        self._line_failures = 0
        return None

    async def _poll_units(self, line: SharedLine) -> DriverError:
        loop = asyncio.get_running_loop()
        now = loop.time()
        units = list(line.units())
        phases = stagger_phases([u.device_id for u in units], self._default_period)
        for unit in units:
            previous = self._schedules.get(unit.device_id)
            schedule = _UnitSchedule(unit, self._periods.get(unit.device_id, self._default_period),
                                     now + phases[unit.device_id])  # fmt: skip
            if previous is not None:  # keep the counters across a reopen of the line
                schedule.polls, schedule.errors = previous.polls, previous.errors
            schedule.quality = (
                previous.quality if previous is not None and previous.quality is not None
                else PointQuality(unit.device_id)
            )  # fmt: skip
            self._schedules[unit.device_id] = schedule
        while True:
            schedule = self._next(loop.time())
            await asyncio.sleep(max(0.0, schedule.due - loop.time()))
            try:
                records = await schedule.unit.read()
            except DeviceUnreachable as exc:
                return exc  # the line itself is gone
            except DriverError as exc:
                await self._on_unit_failure(schedule, exc, loop.time())
                continue
            self._on_unit_success(schedule, loop.time())
            if schedule.quality is not None:
                schedule.quality.observe(records)
            for record in records:
                await self._queue.put(record)

    def _next(self, now: float) -> _UnitSchedule:
        """The unit to poll next: the earliest due, except a degraded unit whose probe would
        run into a healthy unit's slot; that probe waits for the next gap."""
        ordered = sorted(self._schedules.values(), key=lambda s: s.due)
        healthy_due = min((s.due for s in ordered if not s.degraded), default=math.inf)
        for schedule in ordered:
            if not schedule.degraded:
                return schedule
            probe_ends = max(now, schedule.due) + schedule.unit.timeout_s
            if probe_ends <= healthy_due:
                return schedule
        return ordered[0]  # every unit is degraded

    def _on_unit_success(self, schedule: _UnitSchedule, now: float) -> None:
        schedule.polls += 1
        if schedule.degraded or schedule.failures:
            log.info(
                "Device `%s` on line `%s` answers again after %d failed %s.",
                schedule.unit.device_id,
                self._line_id,
                schedule.failures,
                "poll" if schedule.failures == 1 else "polls",
            )
            schedule.degraded = False
            schedule.failures = 0
            schedule.due = now + schedule.period
            return
        schedule.due += schedule.period
        if schedule.due <= now:  # overran: skip ticks, never run late ones
            schedule.due += math.ceil((now - schedule.due) / schedule.period) * schedule.period

    async def _on_unit_failure(self, schedule: _UnitSchedule, exc: DriverError, now: float) -> None:
        schedule.failures += 1
        schedule.errors += 1
        reason = failure_reason(exc)
        if schedule.failures == 1:
            log.warning(
                "Device `%s` on line `%s` failed: %s.", schedule.unit.device_id, self._line_id,
                reason,
            )  # fmt: skip
        if schedule.failures >= self._degrade_after:
            retry = schedule.failures - self._degrade_after
            delay = max(schedule.period, self._backoff.delay(retry, self._rng))
            if not schedule.degraded:
                log.warning(
                    "Device `%s` on line `%s` degraded after %d failed polls; probing every"
                    " %s s or less often so that the other units stay on time.",
                    schedule.unit.device_id,
                    self._line_id,
                    schedule.failures,
                    format_seconds(delay),
                )
            schedule.degraded = True
            schedule.due = now + delay
        else:
            schedule.due = max(schedule.due + schedule.period, now)
        await publish_bad(self._queue, schedule.unit.tags(), self._clock.now(), reason)

    async def _back_off_line(
        self, line: SharedLine, failure: DriverError, *, open_failed: bool
    ) -> None:
        reason = failure_reason(failure)
        delay = self._backoff.delay(self._line_failures, self._rng)
        self._line_failures += 1
        first = self.state is not SourceState.UNREACHABLE
        log_outage(log, f"Line `{self._line_id}`", reason, delay, first=first)
        self.state = SourceState.UNREACHABLE
        await publish_bad(self._queue, line.tags(), self._clock.now(), reason)
        await self._recovery.wait(delay, connect_failed=open_failed)
