"""A configured CAN signal whose message never comes is reported, not simply missing (issue 15,
item 3: "a configured node or signal that never delivers a sample within a few periods is
reported as such"; `status` names the points BAD now, their first BAD reading is logged once).

The real `CanDriver` on python-can's virtual bus, run by the daemon's `StreamingSource`; the
simulator's motor controller sends every message of the demo DBC at its cycle time except
MotorStatus, which it never sends. MotorStatus has a GenMsgCycleTime of 250 ms in the DBC and
signals turn stale after `stale_after_cycles` (3, the default) cycles without a frame: the
`state` signal must be reported after 750 ms and not before, while `speed` (MotorData, sent
every 100 ms) stays GOOD."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable

from gateway.core.clock import SystemClock
from gateway.core.interfaces import Record
from gateway.core.records import Quality, Sample, Tag
from gateway.pipeline.stream import StreamingSource
from protocols.can.config import CanConnection, CanSignal
from protocols.can.driver import CanDriver
from simulator.can_bus import DEMO_DBC, CanMachine
from tests.support.modbus import wait_until

STATUS_CYCLE_S = 0.250  # BA_ "GenMsgCycleTime" BO_ 512 250; in demo_machine.dbc
STALE_AFTER_CYCLES = 3
SIGNALS = [
    CanSignal(name="speed", message="MotorData", signal="SpeedRpm"),
    CanSignal(name="state", message="MotorStatus", signal="State"),
]
_channels = itertools.count()


def driver_factory(channel: str) -> Callable[[], CanDriver]:
    connection = CanConnection.model_validate(
        {"protocol": "can", "interface": "virtual", "channel": channel, "dbc": "demo.dbc"}
    )
    tags = [Tag(id=f"motor-1.{s.name}", asset="motor-1") for s in SIGNALS]

    def make() -> CanDriver:
        # A short receive poll keeps the driver's exit (it joins its receive thread) quick.
        return CanDriver("motor-1", connection, SIGNALS, tags, DEMO_DBC, SystemClock(),
                         receive_poll_s=0.02)  # fmt: skip

    return make


async def test_a_signal_whose_message_never_comes_is_reported_bad_as_stale(caplog) -> None:
    caplog.set_level(logging.INFO, logger="gateway.pipeline.quality")
    channel = f"gw-never-arrives-{next(_channels)}"  # the virtual bus is process-wide
    queue: asyncio.Queue[Record] = asyncio.Queue()
    source = StreamingSource("motor-1", driver_factory(channel), queue, SystemClock())
    stop = asyncio.Event()
    samples: list[tuple[float, Sample]] = []

    async def collect() -> None:
        while True:
            record = await queue.get()
            if isinstance(record, Sample):
                samples.append((time.monotonic(), record))

    async with CanMachine(channel) as machine:
        machine.pause("MotorStatus")  # never sent
        tasks = [
            asyncio.create_task(machine.run(stop), name="can-machine"),
            asyncio.create_task(source.run_source(), name=source.name),
            asyncio.create_task(collect(), name="collect"),
        ]
        started = time.monotonic()
        try:
            await wait_until(lambda: source.statistics()[0].bad_points != (), within_s=5)
            await asyncio.sleep(0.3)  # a few more MotorData frames
        finally:
            stop.set()
            for task in tasks[1:]:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    [stats] = source.statistics()
    # `status` names the point BAD now; the signal that arrives is not named.
    assert stats.bad_points == ("state",)
    assert stats.uncertain_points == () and stats.silent_points == ()
    state = [(t, s) for t, s in samples if s.tag == "motor-1.state"]
    assert state, "no sample at all for the signal that never arrives"
    first_at, first = state[0]
    assert first.quality is Quality.BAD and first.value is None
    stale_s = STATUS_CYCLE_S * STALE_AFTER_CYCLES
    assert first.reason is not None and first.reason.startswith("stale: no frame for ")
    silent_ms = int(first.reason.removeprefix("stale: no frame for ").removesuffix(" ms"))
    assert silent_ms >= stale_s * 1000
    # Not before the signal's few cycles have passed, nor long after (2 busy cores).
    assert stale_s - 0.05 <= first_at - started <= stale_s + 2.0
    speed = [s for _, s in samples if s.tag == "motor-1.speed"]
    assert len(speed) >= 3 and all(s.quality is Quality.GOOD for s in speed)
    # Logged once, with its reason.
    logged = [r.getMessage() for r in caplog.records if "motor-1.state" in r.getMessage()]
    assert len(logged) == 1 and logged[0].startswith("Point `motor-1.state` BAD: stale: no frame")
    assert all(r.levelno == logging.WARNING for r in caplog.records
               if "motor-1.state" in r.getMessage())  # fmt: skip
