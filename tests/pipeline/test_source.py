"""PollingSource: schedule, backoff, BAD samples and state-change logging.

Device behaviour comes from the real pymodbus server (the simulator's) through the real
ModbusTcpDriver; scheduling corner cases (overrun, full queue) use a scripted PollingDriver,
since the source is written against that interface only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import DeviceUnreachable
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag
from gateway.pipeline.source import Backoff, PollingSource
from gateway.pipeline.statistics import SourceState
from simulator.modbus_server import ResponseFault
from simulator.pump import PUMP_POINTS, pump_registers
from tests.support.modbus import ModbusSimServer, make_driver, unused_port, wait_until

SOURCE_LOGGER = "gateway.pipeline.source"
FAST_BACKOFF = Backoff(initial_s=0.05, max_s=0.2, jitter=0.2)
PUMP_TAGS = {f"pump-1.{p.name}" for p in PUMP_POINTS}


class CountingFactory:
    """Builds a fresh Modbus driver per attempt, as gateway.app does, and counts them."""

    def __init__(self, port: int, *, timeout_s: float = 0.3, clock=None) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.clock = clock
        self.built = 0

    def __call__(self):
        self.built += 1
        return make_driver(
            self.port, PUMP_POINTS, device_id="pump-1", timeout_s=self.timeout_s, clock=self.clock
        )


def make_source(factory, queue, *, period_s=0.05, timeout_s=0.5, clock=None) -> PollingSource:
    return PollingSource(
        "pump-1",
        factory,
        queue,
        clock or ManualClock(),
        period_s=period_s,
        timeout_s=timeout_s,
        backoff=FAST_BACKOFF,
        rng=random.Random(4),
    )


@contextlib.asynccontextmanager
async def running(source: PollingSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert source.statistics()[0].state is SourceState.STOPPED


async def next_sample(queue: asyncio.Queue[Record]) -> Sample:
    record = await queue.get()
    assert isinstance(record, Sample)
    return record


async def take_until(
    queue: asyncio.Queue[Record], done: Callable[[Sample], bool], within_s: float = 5.0
) -> list[Sample]:
    """Consume records until one satisfies `done`; returns everything consumed."""
    taken: list[Sample] = []

    async def consume() -> None:
        while True:
            record = await next_sample(queue)
            taken.append(record)
            if done(record):
                return

    await asyncio.wait_for(consume(), within_s)
    return taken


def is_good(sample: Sample) -> bool:
    return sample.quality is Quality.GOOD


def is_bad(sample: Sample) -> bool:
    return sample.quality is Quality.BAD


def source_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == SOURCE_LOGGER and r.levelno == level
    ]


# --- backoff (pure) ----------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_sixty():
    backoff = Backoff(jitter=0.0)
    rng = random.Random(0)
    assert [backoff.delay(n, rng) for n in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.delay(10_000, rng) == 60  # no overflow after days of retries


def test_backoff_jitter_stays_within_twenty_percent_and_varies():
    backoff = Backoff()
    rng = random.Random(1)
    for retry, base in [(0, 1.0), (1, 2.0), (3, 8.0), (20, 60.0)]:
        delays = [backoff.delay(retry, rng) for _ in range(200)]
        assert all(0.8 * base <= d <= 1.2 * base for d in delays)
        assert max(delays) - min(delays) > 0.2 * base  # it really is spread


@pytest.mark.parametrize(
    "kwargs",
    [{"initial_s": 0}, {"max_s": 0.5}, {"factor": 0.5}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_backoff_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


# --- against a real Modbus device ------------------------------------------------------


async def test_polls_at_a_fixed_rate_and_stamps_with_the_injected_clock():
    clock = ManualClock(start=2_000.0)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    async with ModbusSimServer(pump_registers()) as server:
        factory = CountingFactory(server.port, clock=clock)  # the driver stamps its samples
        source = make_source(factory, queue, period_s=0.05, clock=clock)
        assert source.name == "source[pump-1]"
        loop = asyncio.get_running_loop()
        async with running(source):
            first = await take_until(queue, lambda s: s.tag == "pump-1.run_state")
            started = loop.time()
            clock.advance(1.0)
            for _ in range(4):
                await take_until(queue, lambda s: s.tag == "pump-1.run_state")
            last = await take_until(queue, lambda s: s.tag == "pump-1.run_state")
            elapsed = loop.time() - started
        stats = source.statistics()[0]
    assert {s.tag for s in first} == PUMP_TAGS
    assert {s.ts for s in first} == {2_000.0}
    assert all(is_good(s) for s in first)
    assert {s.ts for s in last} == {2_001.0}
    # Five more polls at 50 ms cannot arrive in less than about four periods.
    assert 0.19 <= elapsed < 3.0
    assert stats.reads >= 5
    assert stats.errors == 0
    assert stats.last_latency_s is not None and 0 <= stats.last_latency_s < 0.5


async def test_device_that_disappears_and_comes_back(caplog):
    caplog.set_level(logging.DEBUG, logger=SOURCE_LOGGER)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=1000)
    server = ModbusSimServer(pump_registers())
    await server.start()
    factory = CountingFactory(server.port)
    source = make_source(factory, queue)
    try:
        async with running(source):
            await take_until(queue, is_good)
            assert source.statistics()[0].state is SourceState.POLLING

            await server.stop()
            gone = await take_until(queue, is_bad)
            bad_batch = [gone[-1], *[await next_sample(queue) for _ in range(len(PUMP_TAGS) - 1)]]
            assert {s.tag for s in bad_batch} == PUMP_TAGS
            assert all(is_bad(s) and s.value is None for s in bad_batch)
            assert "connection lost" in (bad_batch[0].reason or "")
            # Keep failing for a while: retries get "connection refused", still BAD samples.
            while source.statistics()[0].errors < 3:
                assert all(is_bad(s) for s in await take_until(queue, is_bad))
            assert source.statistics()[0].state is SourceState.UNREACHABLE

            await server.start()  # same port
            back = await take_until(queue, is_good)
            await wait_until(lambda: source.statistics()[0].state is SourceState.POLLING)
            stats = source.statistics()[0]
    finally:
        await server.stop()

    assert any(is_bad(s) and "connection refused" in (s.reason or "") for s in back)
    warnings = source_lines(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Device `pump-1` unreachable: connection lost; retrying in ")
    assert warnings[0].endswith(" s.")
    reachable = [m for m in source_lines(caplog, logging.INFO) if "reachable" in m]
    assert len(reachable) == 1, reachable
    assert reachable[0] == f"Device `pump-1` reachable again after {stats.errors} attempts."
    assert stats.reconnects == 1
    assert stats.errors >= 3
    assert factory.built == stats.errors + 1  # a fresh driver for every attempt


async def test_connection_refused_at_start_gives_bad_samples_and_keeps_trying(caplog):
    caplog.set_level(logging.INFO, logger=SOURCE_LOGGER)
    port = await unused_port()
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=1000)
    source = make_source(CountingFactory(port), queue)
    server = ModbusSimServer(pump_registers(), port=port)
    try:
        async with running(source) as task:
            first = await take_until(queue, is_bad)
            assert first[0].reason == "connection refused"
            assert first[0].ts == ManualClock().now()
            while source.statistics()[0].errors < 3:
                await take_until(queue, is_bad)
            assert not task.done()
            assert source.statistics()[0].last_error == "connection refused"

            await server.start()
            await take_until(queue, is_good)
    finally:
        await server.stop()
    warnings = source_lines(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "unreachable: connection refused; retrying in" in warnings[0]
    reachable = [m for m in source_lines(caplog, logging.INFO) if "reachable" in m]
    assert len(reachable) == 1 and reachable[0].startswith("Device `pump-1` reachable after ")


async def test_hanging_device_times_out_into_bad_samples_then_recovers(caplog):
    caplog.set_level(logging.INFO, logger=SOURCE_LOGGER)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=1000)
    async with ModbusSimServer(pump_registers()) as server:
        source = make_source(CountingFactory(server.port, timeout_s=0.1), queue)
        async with running(source):
            await take_until(queue, is_good)
            server.fault = ResponseFault.NO_ANSWER
            hung = await take_until(queue, is_bad)
            assert "no answer within 0.1 s" in (hung[-1].reason or "")
            server.fault = ResponseFault.NONE
            await take_until(queue, is_good)
    assert len(source_lines(caplog, logging.WARNING)) == 1
    assert source.statistics()[0].reconnects == 1


async def test_exception_answers_are_bad_values_not_an_outage(caplog):
    caplog.set_level(logging.INFO, logger=SOURCE_LOGGER)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=1000)
    async with ModbusSimServer(pump_registers()) as server:
        source = make_source(CountingFactory(server.port), queue)
        async with running(source):
            await take_until(queue, is_good)
            server.exception_code = 4
            bad = await take_until(queue, is_bad)
            assert "exception 4 (server device failure)" in (bad[-1].reason or "")
            stats = source.statistics()[0]
    assert stats.state is SourceState.POLLING
    assert stats.errors == 0 and stats.bad_values >= 1
    assert source_lines(caplog, logging.WARNING) == []


# --- scheduling, against the PollingDriver interface -------------------------------------


@dataclass
class DriverLog:
    starts: list[float] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0
    exits: int = 0


class ScriptedDriver:
    """A PollingDriver whose reads take `read_s` seconds; records overlap and exits."""

    endpoint = "scripted://one"

    def __init__(
        self,
        log: DriverLog,
        *,
        read_s: float = 0.0,
        tags: int = 1,
        raise_on_read: BaseException | None = None,
    ) -> None:
        self._log = log
        self._read_s = read_s
        self._tags = [Tag(id=f"s.t{i}", asset="s") for i in range(tags)]
        self._raise = raise_on_read

    def tags(self) -> Sequence[Tag]:
        return self._tags

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._log.exits += 1

    async def read(self) -> list[Record]:
        log = self._log
        log.starts.append(asyncio.get_running_loop().time())
        log.concurrent += 1
        log.max_concurrent = max(log.max_concurrent, log.concurrent)
        try:
            if self._raise is not None:
                raise self._raise
            await asyncio.sleep(self._read_s)
        finally:
            log.concurrent -= 1
        return [Sample(tag=t.id, ts=0.0, value=1.0) for t in self._tags]


async def drain_forever(queue: asyncio.Queue[Record]) -> None:
    while True:
        await queue.get()


async def test_overrun_skips_ticks_and_never_overlaps():
    log = DriverLog()
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    source = PollingSource(
        "slow", lambda: ScriptedDriver(log, read_s=0.07), queue, ManualClock(),
        period_s=0.03, timeout_s=1.0,
    )  # fmt: skip
    drainer = asyncio.create_task(drain_forever(queue), name="drain")
    try:
        async with running(source):
            await wait_until(lambda: len(log.starts) >= 4)
    finally:
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
    assert log.max_concurrent == 1
    gaps = [b - a for a, b in itertools.pairwise(log.starts)]
    assert all(g >= 0.07 for g in gaps)  # the next poll waits for the previous one
    # Each 70 ms read overruns the 30 ms period; the missed ticks are skipped, not run late.
    assert source.statistics()[0].skipped_ticks >= len(gaps)
    assert log.exits == 1


async def test_a_full_queue_makes_the_source_wait():
    log = DriverLog()
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=2)
    source = PollingSource(
        "busy", lambda: ScriptedDriver(log, tags=3), queue, ManualClock(),
        period_s=0.01, timeout_s=1.0,
    )  # fmt: skip
    async with running(source):
        await wait_until(queue.full)
        await asyncio.sleep(0.08)  # eight periods: the source must be stuck on put
        assert len(log.starts) == 1
        assert queue.qsize() == 2
        for _ in range(6):
            await asyncio.wait_for(queue.get(), 2.0)
        await wait_until(lambda: len(log.starts) >= 2)
    assert queue.qsize() <= 2


async def test_a_bug_in_a_driver_propagates_and_still_closes_it():
    log = DriverLog()
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10)
    source = PollingSource(
        "buggy", lambda: ScriptedDriver(log, raise_on_read=KeyError("oops")), queue,
        ManualClock(), period_s=0.01, timeout_s=1.0,
    )  # fmt: skip
    with pytest.raises(KeyError):
        await source.run_source()
    assert log.exits == 1
    assert source.statistics()[0].state is SourceState.STOPPED


async def test_driver_errors_from_the_interface_are_retried_not_raised():
    log = DriverLog()
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    source = PollingSource(
        "flaky", lambda: ScriptedDriver(log, tags=2, raise_on_read=DeviceUnreachable("gone")),
        queue, ManualClock(), period_s=0.01, timeout_s=1.0,
        backoff=Backoff(initial_s=0.02, max_s=0.02, jitter=0.0),
    )  # fmt: skip
    async with running(source):
        bad = await take_until(queue, lambda s: s.tag == "s.t1")
        await wait_until(lambda: log.exits >= 3)
    assert [(s.tag, s.reason) for s in bad] == [("s.t0", "gone"), ("s.t1", "gone")]
    assert source.statistics()[0].errors >= 3


def test_stagger_phases_spread_devices_evenly_over_the_period():
    from gateway.pipeline.source import stagger_phases

    phases = stagger_phases(["a", "b", "c", "d"], 1.0)
    assert phases == {"a": 0.0, "b": 0.25, "c": 0.5, "d": 0.75}
    assert stagger_phases([], 2.0) == {}
    with pytest.raises(ValueError, match="positive"):
        stagger_phases(["a"], 0)


def test_stagger_phases_put_devices_per_phase_together_in_as_few_phases_as_that_allows():
    from gateway.pipeline.source import stagger_phases

    ten = [f"d{i}" for i in range(10)]
    assert set(stagger_phases(ten, 1.0, per_phase=10).values()) == {0.0}  # one wake-up
    phases = stagger_phases([f"d{i}" for i in range(25)], 1.0, per_phase=10)
    groups = sorted(Counter(phases.values()).items())
    assert [phase for phase, _ in groups] == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert [n for _, n in groups] == [9, 8, 8]  # never more than 10 at once, evenly
    assert phases["d0"] == phases["d8"] == 0.0 and phases["d9"] > 0  # consecutive together
    many = stagger_phases([f"d{i}" for i in range(500)], 1.0, per_phase=10)
    assert len(set(many.values())) == 50
    with pytest.raises(ValueError, match="per_phase"):
        stagger_phases(ten, 1.0, per_phase=0)


def test_the_plants_sources_are_staggered_25_to_a_phase():
    from gateway.core.plugins import PollingEndpoint
    from gateway.pipeline.sources import DEVICES_PER_PHASE, build_sources

    def never() -> ScriptedDriver:
        raise AssertionError("not started")

    def phases(count: int) -> Counter[float]:
        endpoints = [PollingEndpoint(f"d{i}", never, 1.0, 0.5) for i in range(count)]
        sources = build_sources(endpoints, asyncio.Queue(), ManualClock())
        return Counter(source._phase for source in sources)  # type: ignore[attr-defined]

    assert DEVICES_PER_PHASE == 25
    assert phases(10) == {0.0: 10}  # one wake-up a second for all ten
    assert phases(100) == {0.0: 25, 0.25: 25, 0.5: 25, 0.75: 25}
    assert len(phases(500)) == 20 and max(phases(500).values()) == 25


class TurnCounter:
    """Counts the event loop's turns: a callback that schedules itself for the next one."""

    def __init__(self) -> None:
        self.turn = 0
        self._stopped = False

    def start(self) -> None:
        asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True

    def _tick(self) -> None:
        if not self._stopped:
            self.turn += 1
            asyncio.get_running_loop().call_soon(self._tick)


class TurnLoggingDriver(ScriptedDriver):
    def __init__(self, log: DriverLog, turns: TurnCounter, seen: list[int]) -> None:
        super().__init__(log)
        self._turns, self._seen = turns, seen

    async def read(self) -> list[Record]:
        self._seen.append(self._turns.turn)
        return await super().read()


async def test_sources_that_connect_within_one_lattice_slot_are_woken_together(monkeypatch):
    # 500 devices at 1 s woke the daemon 500 times a second, one timer each; on the shared
    # lattice the devices of a slot wake in one turn of the loop, so one wake-up serves them.
    # A wide slot here, so that a loaded machine cannot push the second connection past it.
    from gateway.pipeline import source as source_module

    lattice = 0.2
    monkeypatch.setattr(source_module, "TICK_LATTICE_S", lattice)
    loop = asyncio.get_running_loop()
    period = 2 * lattice
    turns = TurnCounter()
    logs = [DriverLog(), DriverLog()]
    seen: list[list[int]] = [[], []]
    queue: asyncio.Queue[Record] = asyncio.Queue()
    sources = [
        PollingSource(
            f"s{i}",
            lambda i=i: TurnLoggingDriver(logs[i], turns, seen[i]),
            queue,
            ManualClock(),
            period_s=period,
            timeout_s=1.0,
        )
        for i in range(2)
    ]
    drainer = asyncio.create_task(drain_forever(queue), name="drain")
    turns.start()
    try:
        # The first source early in a slot, the second 6 ms later: one slot for both.
        await asyncio.sleep(lattice - loop.time() % lattice + 0.001)
        async with running(sources[0]):
            await asyncio.sleep(0.006)
            async with running(sources[1]):
                await wait_until(lambda: min(len(log.starts) for log in logs) >= 4, within_s=10.0)
    finally:
        turns.stop()
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
    # The first poll of each is at its connection; every one after on the shared grid.
    assert seen[0][0] != seen[1][0]  # connected apart
    assert seen[0][1:4] == seen[1][1:4]  # then polled in the same turns
