"""StreamingSource: failures become BAD samples and one log line each way; recovery; clean stop.

Most tests use a scripted driver (the StreamingDriver protocol, no protocol underneath); the
last one runs the real CanDriver on the python-can virtual bus.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import pytest

from gateway.core.clock import ManualClock
from gateway.core.errors import BadResponse, ConfigError, DeviceUnreachable, DriverError
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag
from gateway.pipeline.source import Backoff
from gateway.pipeline.statistics import SourceState
from gateway.pipeline.stream import StreamingSource
from protocols.can.config import CanConnection, CanSignal
from protocols.can.driver import CanDriver
from simulator.can_bus import DEMO_DBC, CanMachine

TAGS = (Tag(id="dev.a", asset="dev"), Tag(id="dev.b", asset="dev"))
FAST = Backoff(initial_s=0.001, max_s=0.002, jitter=0.0)
LOGGER = "gateway.pipeline.stream"


@dataclass
class Step:
    """What one driver instance does: fail at enter, or yield values and then fail or hang."""

    enter_error: Exception | None = None
    values: list[float] = field(default_factory=list)
    then: DriverError | None = None  # None: the stream stays open
    hang_on_enter: bool = False
    ends: bool = False


class ScriptedDriver:
    def __init__(self, step: Step, events: list[str]) -> None:
        self._step = step
        self._events = events

    @property
    def endpoint(self) -> str:
        return "scripted:0"

    def tags(self) -> tuple[Tag, ...]:
        return TAGS

    async def __aenter__(self) -> Self:
        self._events.append("enter")
        if self._step.hang_on_enter:
            await asyncio.Event().wait()
        if self._step.enter_error is not None:
            raise self._step.enter_error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._events.append("exit")

    async def records(self) -> AsyncIterator[Record]:
        try:
            for value in self._step.values:
                yield Sample("dev.a", 1.0, value)
            if self._step.then is not None:
                raise self._step.then
            if not self._step.ends:
                await asyncio.Event().wait()
        finally:
            self._events.append("records closed")


def _source(
    steps: list[Step], queue: asyncio.Queue[Record], events: list[str], **options: object
) -> StreamingSource:
    remaining = iter(steps)
    return StreamingSource(
        "dev",
        lambda: ScriptedDriver(next(remaining), events),
        queue,
        ManualClock(),
        backoff=FAST,
        rng=random.Random(1),
        **options,  # type: ignore[arg-type]
    )


async def _get(queue: asyncio.Queue[Record], count: int) -> list[Sample]:
    taken: list[Sample] = []
    async with asyncio.timeout(3.0):
        while len(taken) < count:
            record = await queue.get()
            assert isinstance(record, Sample)
            taken.append(record)
    return taken


async def _wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within 3 s")


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_failures_give_bad_samples_one_warning_and_one_recovery_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    events: list[str] = []
    source = _source(
        [
            Step(enter_error=DeviceUnreachable("connection refused")),
            Step(then=BadResponse("bus-off")),
            Step(values=[1.0, 2.0]),
        ],
        queue,
        events,
    )
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        records = await _get(queue, 6)
        stats = source.statistics()[0]
    finally:
        await _stop(task)

    assert [(r.tag, r.quality, r.value, r.reason) for r in records] == [
        ("dev.a", Quality.BAD, None, "connection refused"),
        ("dev.b", Quality.BAD, None, "connection refused"),
        ("dev.a", Quality.BAD, None, "bus-off"),
        ("dev.b", Quality.BAD, None, "bus-off"),
        ("dev.a", Quality.GOOD, 1.0, None),
        ("dev.a", Quality.GOOD, 2.0, None),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert warnings == ["Device `dev` unreachable: connection refused; retrying in 0 s."]
    assert infos == ["Device `dev` reachable again after 2 attempts."]
    assert (stats.state, stats.errors, stats.reconnects, stats.reads) == (
        SourceState.STREAMING, 2, 1, 2
    )
    assert stats.last_error == "bus-off"
    # Every driver is exited, also the one whose enter failed; the open stream is closed.
    assert events == [
        "enter", "exit",
        "enter", "records closed", "exit",
        "enter", "records closed", "exit",
    ]
    assert source.statistics()[0].state is SourceState.STOPPED


async def test_first_connection_logs_streaming_and_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10)
    source = _source([Step(values=[5.0])], queue, [])
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        [record] = await _get(queue, 1)
    finally:
        await _stop(task)
    assert record.value == 5.0
    assert [r.getMessage() for r in caplog.records] == [
        "Device `dev` streaming from `scripted:0`."
    ]


async def test_a_stream_that_ends_is_retried_as_unreachable() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10)
    source = _source([Step(values=[1.0], ends=True), Step(values=[2.0])], queue, [])
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        records = await _get(queue, 4)
    finally:
        await _stop(task)
    assert [(r.value, r.reason) for r in records] == [
        (1.0, None), (None, "the stream ended"), (None, "the stream ended"), (2.0, None)
    ]
    assert source.statistics()[0].reconnects == 1


async def test_enter_that_hangs_times_out_as_device_timeout() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10)
    events: list[str] = []
    source = _source(
        [Step(hang_on_enter=True), Step(values=[3.0])], queue, events, connect_timeout_s=0.02
    )
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        records = await _get(queue, 3)
    finally:
        await _stop(task)
    assert records[0].reason == "no connection within 0 s"
    assert records[2].value == 3.0
    assert events[:2] == ["enter", "exit"]


async def test_config_error_is_not_retried() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10)
    events: list[str] = []
    problem = ConfigError([])
    source = _source([Step(enter_error=problem)], queue, events)
    with pytest.raises(ConfigError):
        await source.run_source()
    assert events == ["enter", "exit"]
    assert queue.empty()


async def test_full_queue_makes_the_source_wait_and_cancel_still_cleans_up() -> None:
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=2)
    events: list[str] = []
    source = _source([Step(values=[float(i) for i in range(10)])], queue, events)
    task = asyncio.create_task(source.run_source(), name=source.name)
    await _wait_until(queue.full)
    await asyncio.sleep(0.02)  # the source is now blocked on put
    assert queue.qsize() == 2
    assert source.statistics()[0].reads == 3  # two queued, one waiting to be put
    await _stop(task)
    assert events == ["enter", "records closed", "exit"]


async def test_real_can_driver_bus_off_then_recovery() -> None:
    channel = "gw-stream-bus-off"
    clock = ManualClock()
    connection = CanConnection(protocol="can", interface="virtual", channel=channel, dbc="d.dbc")
    signals = [
        CanSignal(name="speed", message="MotorData", signal="SpeedRpm", cycle_ms=60_000),
        CanSignal(name="winding", message="MotorData", signal="WindingTemp", cycle_ms=60_000),
    ]
    tags = [Tag(id=f"m.{s.name}", asset="m", unit="rpm") for s in signals]
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=100)
    source = StreamingSource(
        "m",
        lambda: CanDriver("m", connection, signals, tags, DEMO_DBC, clock, receive_poll_s=0.02),
        queue,
        clock,
        backoff=FAST,
    )
    async with CanMachine(channel) as machine:
        task = asyncio.create_task(source.run_source(), name=source.name)
        try:
            async with asyncio.timeout(3.0):
                # Keep sending until the source is listening: it opens the bus in its own time.
                while queue.empty():
                    machine.send("MotorData")
                    await asyncio.sleep(0.01)
            first = await _get(queue, 2)
            machine.send_error_frame(bus_off=True)
            records = await _get(queue, 2)
            while not all(r.quality is Quality.BAD for r in records[-2:]):
                records += await _get(queue, 1)
            bad = records[-2:]
            async with asyncio.timeout(3.0):
                while source.statistics()[0].reconnects == 0:
                    machine.send("MotorData")
                    await asyncio.sleep(0.01)
        finally:
            await _stop(task)
    assert {r.tag for r in first} == {"m.speed", "m.winding"}
    assert [(r.tag, r.reason) for r in bad] == [
        ("m.speed", "CAN channel `virtual:" + channel + "` is bus-off"),
        ("m.winding", "CAN channel `virtual:" + channel + "` is bus-off"),
    ]
    assert source.statistics()[0].state is SourceState.STOPPED
    assert not [t for t in threading.enumerate() if t.name.startswith("can-recv")]
