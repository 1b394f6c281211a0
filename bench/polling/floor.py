"""The floor of polling in asyncio Python: the same plant and the same exchanges as the daemon
makes (one connection per device, one read of all registers per device per period, 25
devices a phase on the 20 ms tick lattice), by a client that does nothing else. No decoding,
no timeouts, no storage, no detectors, no MQTT: what is left is the event loop, the socket
calls and the kernel, which any asyncio poller pays per exchange.

    .venv/bin/python -m bench.polling.floor --devices 500 --registers 30 --seconds 60

The daemon's CPU at the same plant (`bench.polling.bench`) minus this floor is what the
product adds per exchange; the floor against another gateway's CPU bounds how much lighter
any asyncio poller could be than that gateway. CPU is this process's (utime + stime of every
thread) over the window; the plant runs in its own process (`bench/polling/server.py`), as
for the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import struct
import tempfile
import time
from pathlib import Path

from bench.polling.bench import Scenario, cpu_model, cpu_seconds, load_average, start_plant

PER_PHASE = 25  # as `gateway.pipeline.source` staggers the plant's endpoints
TICK_S = 0.02  # the daemon's tick lattice
_REQUEST = struct.Struct(">HHHBBHH")  # MBAP + read holding registers


class BareReader(asyncio.Protocol):
    """One device's connection: counts every whole answer, looks at nothing in it."""

    def __init__(self, answer_size: int) -> None:
        self.answer_size = answer_size
        self.answers = 0
        self._pending = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._pending += len(data)
        while self._pending >= self.answer_size:
            self._pending -= self.answer_size
            self.answers += 1


async def poll_phase(
    readers: list[BareReader], request: bytes, period_s: float, offset_s: float
) -> None:
    loop = asyncio.get_running_loop()
    due = (loop.time() // period_s + 1) * period_s + offset_s
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        for reader in readers:
            assert reader.transport is not None
            reader.transport.write(request)
        due += period_s


async def run_once(scenario: Scenario, seconds: float, warmup: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        plant, ports = start_plant(Path(tmp), scenario, "endpoints", 0.0)
        tasks: list[asyncio.Task[None]] = []
        try:
            loop = asyncio.get_running_loop()
            answer_size = 9 + 2 * scenario.registers
            readers = []
            for port in ports:
                _, reader = await loop.create_connection(
                    lambda: BareReader(answer_size), "127.0.0.1", port
                )
                readers.append(reader)
            request = _REQUEST.pack(1, 0, 6, 1, 3, 0, scenario.registers)
            phases = [readers[i : i + PER_PHASE] for i in range(0, len(readers), PER_PHASE)]
            spacing = max(TICK_S, round(scenario.period_s / len(phases) / TICK_S) * TICK_S)
            tasks = [
                asyncio.create_task(
                    poll_phase(phase, request, scenario.period_s, (n * spacing) % scenario.period_s)
                )
                for n, phase in enumerate(phases)
            ]
            await asyncio.sleep(warmup)
            answers0 = sum(r.answers for r in readers)
            cpu0, plant0, wall0 = cpu_seconds(os.getpid()), cpu_seconds(plant.pid), time.monotonic()
            load0 = load_average()
            await asyncio.sleep(seconds)
            cpu1, plant1, wall1 = cpu_seconds(os.getpid()), cpu_seconds(plant.pid), time.monotonic()
            answers = sum(r.answers for r in readers) - answers0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            plant.terminate()
            plant.wait()
    elapsed = wall1 - wall0
    cpu = cpu1 - cpu0
    return {
        "requests_s": answers / elapsed,
        "cpu_pct": 100 * cpu / elapsed,
        "us_per_exchange": 1e6 * cpu / max(1, answers),
        "plant_cpu_pct": 100 * (plant1 - plant0) / elapsed,
        "load": (load0 + load_average()) / 2,
    }


COLUMNS = ("requests_s", "cpu_pct", "us_per_exchange", "plant_cpu_pct", "load")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--registers", type=int, default=30)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    name = f"floor: {args.devices} dev x {args.registers} reg @ {args.period:g} s"
    scenario = Scenario(name, args.devices, args.registers, args.period)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()};"
          f" {args.runs} run(s) of {args.seconds:g} s after {args.warmup:g} s")  # fmt: skip
    print("| scenario | " + " | ".join(COLUMNS) + " |")
    print("| --- | " + " | ".join("---" for _ in COLUMNS) + " |", flush=True)
    runs = []
    for n in range(args.runs):
        result = asyncio.run(run_once(scenario, args.seconds, args.warmup))
        runs.append(result)
        print(f"| {name}, run {n + 1} | " + " | ".join(f"{result[c]:.2f}" for c in COLUMNS) + " |")
    if args.runs > 1:
        median = {c: statistics.median(r[c] for r in runs) for c in COLUMNS}
        print(f"| **{name}, median** | " + " | ".join(f"{median[c]:.2f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
