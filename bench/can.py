"""CAN frames/s decoded, with the CPU it costs.

Run from the repository root:  .venv/bin/python -m bench.can   (or: python bench/can.py)

What is measured: the real CanDriver on the python-can `virtual` bus, behind a StreamingSource,
into a bounded queue drained by a counting consumer: receive thread, DBC decoding, Sample
creation, queue hand-off. The frames come from a sender thread in the same process (the virtual
bus does not cross processes); its CPU is measured per thread and NOT counted as gateway CPU.
Gateway CPU = CPU time of the event-loop thread + the receive thread, read from the per-thread
CPU clocks (Linux `pthread_getcpuclockid`).

Scenarios: as fast as possible (throughput ceiling), then fixed rates (CPU at a given load).
Frames rotate over the demo DBC: MotorData (4 signals), MotorStatus (multiplexed, 2 configured
signals per page) and BearingTemps (2 signals, extended id).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/can.py` puts bench/ first on sys.path, where this file would shadow python-can.
_here = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]

import asyncio  # noqa: E402
import itertools  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import can  # noqa: E402

from gateway.core.clock import SystemClock  # noqa: E402
from gateway.core.interfaces import QueueItem  # noqa: E402
from gateway.core.records import Tag  # noqa: E402
from gateway.pipeline.source import Backoff  # noqa: E402
from gateway.pipeline.stream import StreamingSource  # noqa: E402
from protocols.can.config import CanConnection, CanSignal  # noqa: E402
from protocols.can.driver import CanDriver  # noqa: E402
from simulator.can_bus import DEMO_DBC, CanMachine  # noqa: E402

SIGNALS = [
    CanSignal(name="speed", message="MotorData", signal="SpeedRpm"),
    CanSignal(name="current", message="MotorData", signal="CurrentA"),
    CanSignal(name="winding", message="MotorData", signal="WindingTemp"),
    CanSignal(name="dc_link", message="MotorData", signal="DcLinkVoltage"),
    CanSignal(name="state", message="MotorStatus", signal="State"),
    CanSignal(name="fault", message="MotorStatus", signal="FaultCode"),
    CanSignal(name="hours", message="MotorStatus", signal="OperatingHours"),
    CanSignal(name="starts", message="MotorStatus", signal="StartCount"),
    CanSignal(name="bearing_de", message="BearingTemps", signal="BearingTempDE"),
    CanSignal(name="bearing_nde", message="BearingTemps", signal="BearingTempNDE"),
]
_channels = itertools.count()
# One rotation = MotorData (4 signals), MotorStatus page 0 (2), page 1 (2), BearingTemps (2).
_SAMPLES_PER_ROTATION = 10


@dataclass(frozen=True)
class Result:
    scenario: str
    frames: int
    seconds: float
    samples: int
    loop_cpu_s: float  # event-loop thread: decoding, Samples, source, queue
    receive_cpu_s: float  # the driver's receive thread
    sender_cpu_s: float
    overruns: int

    @property
    def gateway_cpu_s(self) -> float:
        return self.loop_cpu_s + self.receive_cpu_s

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds

    @property
    def cpu_ms_per_1000_frames(self) -> float:
        return self.gateway_cpu_s * 1000 / self.frames * 1000

    @property
    def cpu_percent(self) -> float:
        return 100 * self.gateway_cpu_s / self.seconds

    @property
    def receive_share(self) -> float:
        return 100 * self.receive_cpu_s / self.gateway_cpu_s


async def _receive_thread() -> threading.Thread:
    for _ in range(5000):
        for thread in threading.enumerate():
            if thread.name == "can-recv[m]":
                return thread
        await asyncio.sleep(0.001)
    raise RuntimeError("the CAN driver did not start its receive thread")


def _thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _prepare_frames(count: int) -> list[can.Message]:
    """Pre-encoded frames, so the sender's cost is a send and nothing else."""
    machine = CanMachine(f"bench-encode-{next(_channels)}")
    try:
        database = machine.database
        templates: list[can.Message] = []
        for name in ("MotorData", "MotorStatus", "MotorStatus", "BearingTemps"):
            message = database.get_message_by_name(name)
            data = message.encode(machine.values(name))
            if message.is_multiplexed():
                machine.send(name)  # advances the page for the next template
            templates.append(
                can.Message(
                    arbitration_id=message.frame_id,
                    is_extended_id=message.is_extended_frame,
                    data=data,
                )
            )
    finally:
        machine.close()
    return [templates[i % len(templates)] for i in range(count)]


def _sender(channel: str, frames: list[can.Message], rate: float | None, ready: threading.Event,
            cpu: list[float]) -> None:
    bus = can.Bus(interface="virtual", channel=channel)
    ready.wait()
    start = time.perf_counter()
    try:
        if rate is None:
            for frame in frames:
                bus.send(frame)
        else:
            # Batches every 5 ms: finer pacing than time.sleep can hold on a loaded machine.
            per_batch = max(1, round(rate * 0.005))
            for i in range(0, len(frames), per_batch):
                for frame in frames[i : i + per_batch]:
                    bus.send(frame)
                due = start + (i + per_batch) / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
    finally:
        cpu.append(time.thread_time())
        bus.shutdown()


async def _run(scenario: str, frames: int, rate: float | None) -> Result:
    channel = f"bench-{next(_channels)}"
    clock = SystemClock()
    connection = CanConnection(
        protocol="can",
        interface="virtual",
        channel=channel,
        dbc="demo_machine.dbc",
        receive_buffer_frames=max(frames, 16),
    )
    tags = [Tag(id=f"m.{s.name}", asset="m") for s in SIGNALS]
    drivers: list[CanDriver] = []

    def factory() -> CanDriver:
        driver = CanDriver("m", connection, SIGNALS, tags, DEMO_DBC, clock)
        drivers.append(driver)
        return driver

    queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=10_000)
    source = StreamingSource("m", factory, queue, clock, backoff=Backoff(initial_s=0.01))
    counted = 0
    expected = frames // 4 * _SAMPLES_PER_ROTATION
    all_counted = asyncio.Event()

    async def consume() -> None:
        # Wakes only for records, so the bench adds no timer wake-ups of its own.
        nonlocal counted
        while True:
            await queue.get()
            counted += 1
            if counted == expected:
                all_counted.set()

    payload = _prepare_frames(frames)
    ready = threading.Event()
    sender_cpu: list[float] = []
    sender = threading.Thread(
        target=_sender, args=(channel, payload, rate, ready, sender_cpu), name="bench-sender"
    )
    sender.start()
    async with asyncio.TaskGroup() as group:
        consumer = group.create_task(consume(), name="bench-consumer")
        source_task = group.create_task(source.run_source(), name=source.name)
        receiver_thread = await _receive_thread()  # the bus listens once it runs
        loop_cpu0, recv_cpu0 = time.thread_time(), _thread_cpu(receiver_thread)
        started = time.perf_counter()
        ready.set()
        await all_counted.wait()
        seconds = time.perf_counter() - started
        loop_cpu = time.thread_time() - loop_cpu0
        receive_cpu = _thread_cpu(receiver_thread) - recv_cpu0
        stats = drivers[0].statistics()
        source_task.cancel()
        consumer.cancel()
    sender.join()
    return Result(scenario, stats.frames, seconds, counted, loop_cpu, receive_cpu,
                  sender_cpu[0], stats.overruns)


async def _idle(seconds: float) -> float:
    """CPU % of one core for a driver listening on a silent bus (default stale check period)."""
    connection = CanConnection(
        protocol="can", interface="virtual", channel=f"bench-{next(_channels)}", dbc="d.dbc"
    )
    tags = [Tag(id=f"m.{s.name}", asset="m") for s in SIGNALS]
    long_cycle = [s.model_copy(update={"cycle_ms": 3_600_000}) for s in SIGNALS]
    driver = CanDriver("m", connection, long_cycle, tags, DEMO_DBC, SystemClock())
    async with driver:
        receiver_thread = await _receive_thread()
        loop_cpu0, recv_cpu0 = time.thread_time(), _thread_cpu(receiver_thread)
        stream = driver.records()
        try:
            async with asyncio.timeout(seconds):
                async for _ in stream:
                    raise AssertionError("a silent bus produced a record")
        except TimeoutError:
            pass
        cpu = time.thread_time() - loop_cpu0 + _thread_cpu(receiver_thread) - recv_cpu0
    return 100 * cpu / seconds


def main() -> None:
    scenarios = [
        ("max rate", 50_000, None),
        ("1 000 frames/s", 5_000, 1_000.0),
        ("5 000 frames/s", 25_000, 5_000.0),
    ]
    results = [asyncio.run(_run(name, frames, rate)) for name, frames, rate in scenarios]
    header = (
        f"{'scenario':<16} {'frames':>7} {'frames/s':>9} {'samples/s':>10} "
        f"{'CPU ms/1000 fr':>15} {'gw CPU %core':>13} {'recv thread %':>14} "
        f"{'overruns':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.scenario:<16} {r.frames:>7} {r.frames_per_s:>9.0f} "
            f"{r.samples / r.seconds:>10.0f} {r.cpu_ms_per_1000_frames:>15.1f} "
            f"{r.cpu_percent:>13.1f} {r.receive_share:>14.0f} {r.overruns:>9}"
        )
    idle_percent = asyncio.run(_idle(seconds=3.0))
    print(f"{'idle, 3 s':<16} {0:>7} {0:>9} {0:>10} {'-':>15} {idle_percent:>13.2f}")
    sender = ", ".join(f"{r.sender_cpu_s:.2f} s" for r in results)
    print(f"(sender thread CPU, not counted as gateway CPU: {sender})")


if __name__ == "__main__":
    main()
