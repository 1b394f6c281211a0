"""One probe of one device: its plugin's endpoint and driver, run for one poll or a while.

The same drivers the daemon runs, built by the same protocol plugin from the same device file,
so what the probe shows is what the gateway would collect. The drivers only read (DESIGN.md
section 9: function codes 1-4, OPC UA Read and subscriptions, CAN listen-only); a probe makes
no request a running gateway would not.

Polled endpoints (Modbus TCP, a unit on an RTU line) are read once, or every poll period for
`duration_s`. Streaming endpoints (OPC UA subscriptions, a CAN channel) are listened to until
every point has delivered once (bounded by the endpoint's silence limit), or for `duration_s`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.core.clock import Clock
from gateway.core.errors import DeviceTimeout, DeviceUnreachable, DriverError
from gateway.core.exit_codes import EX_DATAERR, EX_OK, EX_UNAVAILABLE
from gateway.core.interfaces import Inspectable, LineUnit, PollingDriver, Record, StreamingDriver
from gateway.core.plugins import Endpoint, PollingEndpoint, SharedLineEndpoint, StreamingEndpoint
from gateway.core.records import Quality, Sample, Tag, Waveform
from gateway.pipeline.supervision import connect_within, failure_reason

# A stream without a silence limit of its own is listened to this long for a first reading.
DEFAULT_LISTEN_S = 10.0
CONNECT_TIMEOUT_S = 10.0


@dataclass
class PointReport:
    tag: Tag
    last: Record | None = None
    raw: str | None = None
    counts: Counter[Quality] = field(default_factory=Counter)

    @property
    def readings(self) -> int:
        return sum(self.counts.values())

    @property
    def worst(self) -> Quality | None:
        """The worst quality seen in the window; None without any reading."""
        return min(self.counts) if self.counts else None


@dataclass
class ProbeResult:
    device: str
    protocol: str
    points: list[PointReport]
    endpoint: str | None = None
    plan: list[str] = field(default_factory=list)
    labels: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    connected: bool = False
    unreachable: str | None = None  # why the device could not be reached at all
    failures: list[str] = field(default_factory=list)  # polls that failed as a whole
    polls: int = 0
    started: float = 0.0
    ended: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every point was GOOD throughout, 65 when one was not (or never read),
        69 when the device could not be reached."""
        if self.unreachable is not None or not any(p.readings for p in self.points):
            return EX_UNAVAILABLE
        if any(p.worst is not Quality.GOOD for p in self.points):
            return EX_DATAERR
        return EX_OK

    def observe(self, records: Sequence[Record]) -> None:
        by_tag = self._by_tag()
        for record in records:
            report = by_tag.get(record.tag)
            if report is not None:
                report.last = record
                report.counts[record.quality] += 1

    def failed_poll(self, reason: str) -> None:
        """A poll that failed as a whole: a BAD reading for every point, as the daemon has."""
        self.failures.append(reason)
        now = time.time()
        self.observe([Sample.bad(p.tag.id, now, reason) for p in self.points])

    def take_details(self, driver: object) -> None:
        if isinstance(driver, Inspectable):
            raw = driver.raw_values()
            for report in self.points:
                if report.tag.id in raw:
                    report.raw = raw[report.tag.id]
            self.labels = driver.state_labels()

    def _by_tag(self) -> dict[str, PointReport]:
        return {report.tag.id: report for report in self.points}


async def probe(
    device: str,
    protocol: str,
    endpoint: Endpoint,
    tags: Sequence[Tag],
    clock: Clock,
    duration_s: float | None,
) -> ProbeResult:
    """Run `endpoint` once (or for `duration_s`) and report every point of `tags`."""
    result = ProbeResult(device, protocol, [PointReport(tag) for tag in tags])
    result.started = clock.now()
    try:
        if isinstance(endpoint, PollingEndpoint):
            await _poll(endpoint, result, duration_s)
        elif isinstance(endpoint, StreamingEndpoint):
            await _listen(endpoint, result, duration_s)
        elif isinstance(endpoint, SharedLineEndpoint):
            await _poll_line(endpoint, device, result, duration_s)
        else:  # pragma: no cover - the Endpoint union is closed
            raise TypeError(f"unknown endpoint {endpoint!r}")
    finally:
        result.ended = clock.now()
    return result


async def _poll(endpoint: PollingEndpoint, result: ProbeResult, duration_s: float | None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (duration_s or 0.0)
    next_poll = loop.time()
    driver: PollingDriver | None = None
    try:
        while True:
            if driver is None:
                driver = endpoint.driver_factory()
                failure = await connect_within(driver.__aenter__(), endpoint.timeout_s)
                if failure is not None:
                    await driver.__aexit__(None, None, None)
                    driver = None
                    if not result.connected:
                        result.unreachable = failure_reason(failure)
                        return
                    result.failed_poll(failure_reason(failure))
                else:
                    _connected(result, driver)
            if driver is not None:
                try:
                    async with asyncio.timeout(endpoint.timeout_s):
                        records = await driver.read()
                except TimeoutError:
                    result.failed_poll(f"no answer within {endpoint.timeout_s:g} s")
                except DriverError as exc:
                    result.failed_poll(failure_reason(exc))
                    if isinstance(exc, DeviceUnreachable | DeviceTimeout):
                        await driver.__aexit__(None, None, None)
                        driver = None  # reconnect at the next poll, as the daemon does
                else:
                    result.polls += 1
                    result.observe(records)
                    result.take_details(driver)
            next_poll += endpoint.period_s
            if next_poll > deadline:
                return
            await asyncio.sleep(max(0.0, next_poll - loop.time()))
    finally:
        if driver is not None:
            await driver.__aexit__(None, None, None)


async def _poll_line(
    endpoint: SharedLineEndpoint, device: str, result: ProbeResult, duration_s: float | None
) -> None:
    loop = asyncio.get_running_loop()
    line = endpoint.line_factory()
    try:
        failure = await connect_within(line.__aenter__(), CONNECT_TIMEOUT_S)
        if failure is not None:
            result.unreachable = failure_reason(failure)
            return
        unit: LineUnit = next(u for u in line.units() if u.device_id == device)
        _connected(result, unit, line.endpoint)
        period = endpoint.periods_s.get(device, 1.0)
        deadline = loop.time() + (duration_s or 0.0)
        next_poll = loop.time()
        while True:
            try:
                async with asyncio.timeout(unit.timeout_s * 4):
                    records = await unit.read()
            except TimeoutError:
                result.failed_poll(f"no answer within {unit.timeout_s * 4:g} s")
            except DriverError as exc:
                result.failed_poll(failure_reason(exc))
            else:
                result.polls += 1
                result.observe(records)
                result.take_details(unit)
            next_poll += period
            if next_poll > deadline:
                return
            await asyncio.sleep(max(0.0, next_poll - loop.time()))
    finally:
        await line.__aexit__(None, None, None)


async def _listen(
    endpoint: StreamingEndpoint, result: ProbeResult, duration_s: float | None
) -> None:
    loop = asyncio.get_running_loop()
    driver: StreamingDriver = endpoint.driver_factory()
    try:
        failure = await connect_within(driver.__aenter__(), CONNECT_TIMEOUT_S)
        if failure is not None:
            result.unreachable = failure_reason(failure)
            return
        _connected(result, driver)
        listen_s = duration_s if duration_s is not None else (
            endpoint.silence_limit_s or DEFAULT_LISTEN_S
        )  # fmt: skip
        waiting = {report.tag.id for report in result.points}
        stream = driver.records()
        try:
            async with asyncio.timeout_at(loop.time() + listen_s):
                async for record in stream:
                    result.observe([record])
                    waiting.discard(record.tag)
                    if duration_s is None and not waiting:
                        break
        except TimeoutError:
            pass  # the window is over; points still waiting had nothing to say
        except DriverError as exc:
            result.failed_poll(failure_reason(exc))
        finally:
            await _close(stream)
        result.polls = 1
        result.take_details(driver)
    finally:
        await driver.__aexit__(None, None, None)


def _connected(result: ProbeResult, driver: object, endpoint: str | None = None) -> None:
    if result.connected:
        return
    result.connected = True
    result.endpoint = endpoint or str(getattr(driver, "endpoint", "")) or None
    if isinstance(driver, Inspectable):
        result.plan = driver.describe_plan()


async def _close(stream: AsyncIterator[Record]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def waveform_summary(waveform: Waveform) -> str:
    data = waveform.data
    rms = math.sqrt(float((data * data).mean())) if len(data) else 0.0
    return (
        f"{len(data)} samples at {waveform.sample_rate:g} Hz, RMS {rms:.4g} {waveform.unit}"
    ).rstrip()
