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
import enum
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.core.clock import Clock
from gateway.core.errors import DeviceTimeout, DriverError
from gateway.core.interfaces import PollingDriver, Record
from gateway.core.records import Quality, Sample, Tag

log = logging.getLogger(__name__)

DriverFactory = Callable[[], PollingDriver]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number n (0-based): initial * factor**n, capped, then +-jitter.

    Jitter is applied after the cap so that devices behind one switch that came back together
    do not all retry in the same second forever.
    """

    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.factor < 1:
            raise ValueError(f"invalid backoff {self}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {self.jitter}")

    def delay(self, retry: int, rng: random.Random) -> float:
        # Cap the exponent too: factor**retry overflows a float long before a device returns.
        exponent = min(retry, 64)
        base = min(self.max_s, self.initial_s * self.factor**exponent)
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


class SourceState(enum.StrEnum):
    STARTING = "starting"
    POLLING = "polling"
    UNREACHABLE = "unreachable"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SourceStatistics:
    device: str
    state: SourceState
    polls: int  # successful reads
    errors: int  # failed connects and reads
    reconnects: int  # recoveries after the device was unreachable
    bad_values: int  # BAD samples inside successful reads (exception answers, undecodable)
    skipped_ticks: int  # ticks dropped because a poll overran its period
    last_latency_s: float | None
    last_error: str | None


class PollingSource:
    """Polls one endpoint at a fixed rate until cancelled; see the module docstring."""

    def __init__(
        self,
        device_id: str,
        driver_factory: DriverFactory,
        queue: asyncio.Queue[Record],
        clock: Clock,
        *,
        period_s: float,
        timeout_s: float,
        backoff: Backoff | None = None,
        phase_s: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        """`timeout_s` bounds one connect and one whole read (the driver's own per-request
        timeouts should be shorter). `phase_s` delays the first poll, to stagger devices that
        share a period (issue 3)."""
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
        self._rng = rng or random.Random()

        self._state = SourceState.STARTING
        self._polls = 0
        self._errors = 0
        self._reconnects = 0
        self._bad_values = 0
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

    def statistics(self) -> SourceStatistics:
        return SourceStatistics(
            device=self._device_id,
            state=self._state,
            polls=self._polls,
            errors=self._errors,
            reconnects=self._reconnects,
            bad_values=self._bad_values,
            skipped_ticks=self._skipped,
            last_latency_s=self._last_latency,
            last_error=self._last_error,
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
                    if failure is None:
                        failure = await self._poll_until_failure(driver)
                finally:
                    # Also after a failed enter: exit is idempotent and never raises (the
                    # PollingDriver contract), and a half-open connection must not leak.
                    await driver.__aexit__(None, None, None)
                await self._back_off(tags, failure)
        finally:
            self._state = SourceState.STOPPED

    async def _connect(self, driver: PollingDriver) -> DriverError | None:
        try:
            await asyncio.wait_for(driver.__aenter__(), self._timeout)
        except TimeoutError:
            return DeviceTimeout(f"no connection within {_seconds(self._timeout)} s")
        except DriverError as exc:
            return exc
        return None

    async def _poll_until_failure(self, driver: PollingDriver) -> DriverError:
        loop = asyncio.get_running_loop()
        # The grid starts at each (re)connection, so time spent connecting or backing off is
        # not counted as skipped ticks.
        self._next_tick = loop.time()
        while True:
            started = loop.time()
            try:
                records = await asyncio.wait_for(driver.read(), self._timeout)
            except TimeoutError:
                return DeviceTimeout(f"no answer within {_seconds(self._timeout)} s")
            except DriverError as exc:
                return exc
            self._last_latency = loop.time() - started
            self._on_good_read(driver, records)
            for record in records:
                await self._queue.put(record)
            await self._sleep_until_next_tick()

    def _on_good_read(self, driver: PollingDriver, records: Sequence[Record]) -> None:
        self._polls += 1
        self._bad_values += sum(
            1 for r in records if isinstance(r, Sample) and r.quality is Quality.BAD
        )
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
                _seconds(self._period),
            )
        self._state = SourceState.POLLING
        self._failures = 0

    async def _back_off(self, tags: Sequence[Tag], failure: DriverError) -> None:
        """Publish BAD samples at the poll rate until the retry is due."""
        loop = asyncio.get_running_loop()
        self._errors += 1
        reason = str(failure) or type(failure).__name__
        self._last_error = reason
        delay = self._backoff.delay(self._failures, self._rng)
        self._failures += 1
        if self._state is not SourceState.UNREACHABLE:
            log.warning(
                "Device `%s` unreachable: %s; retrying in %s s.",
                self._device_id,
                reason,
                _seconds(delay),
            )
            self._state = SourceState.UNREACHABLE
        else:
            log.debug(
                "Device `%s` still unreachable: %s; retrying in %s s.",
                self._device_id,
                reason,
                _seconds(delay),
            )
        # Each failure is followed by exactly one retry, so failures count the attempts.
        tick = loop.time()
        retry_at = tick + delay
        while True:
            await self._publish_bad(tags, reason)
            tick += self._period
            if tick >= retry_at:
                break
            await asyncio.sleep(max(0.0, tick - loop.time()))
        await asyncio.sleep(max(0.0, retry_at - loop.time()))

    async def _publish_bad(self, tags: Sequence[Tag], reason: str) -> None:
        ts = self._clock.now()
        for tag in tags:
            await self._queue.put(Sample.bad(tag.id, ts, reason))

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
        await asyncio.sleep(self._next_tick - now)


def _seconds(value: float) -> str:
    """2 -> "2", 1.25 -> "1.2", 47.6 -> "48": enough precision for a log line."""
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}".rstrip("0").rstrip(".")
