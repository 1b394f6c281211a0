"""Polling benchmark (issue 3): N Modbus TCP devices x M registers at a fixed period.

The pymodbus server runs in another process (one port, every unit id answered), so the CPU
measured here is the gateway's only: PollingSource + ModbusTcpDriver + decoding into a bounded
queue, drained by a consumer that counts records (the lead's full pipeline with detectors and
the telemetry store is not wired in here).

    .venv/bin/python -m bench.polling.bench --devices 500 --registers 30 --period 1 --seconds 20
    .venv/bin/python -m bench.polling.bench --idle --seconds 20

Prints one table: requests/s, registers/s, gateway CPU (% of one core and ms per 1000
registers), p99 poll jitter (|interval between two polls of a device - period|), RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Self

from gateway.core.clock import SystemClock
from gateway.core.interfaces import PollingDriver, Record
from gateway.core.records import Tag
from gateway.pipeline.source import Backoff, PollingSource, stagger_phases
from protocols.modbus.config import ModbusPoint, ModbusTcpConnection
from protocols.modbus.driver import ModbusTcpDriver


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def serve(port_file: str, registers: int) -> None:
    from simulator.modbus_server import ModbusSimServer, RegisterMap

    regs = RegisterMap(holding=max(registers, 1), input=1)
    regs.write(regs_table(), 0, [i % 65536 for i in range(registers)])
    async with ModbusSimServer(regs, unit_id=0) as server:
        # Written once before serving; a blocking write of a few bytes is fine here.
        with open(port_file + ".tmp", "w") as f:  # noqa: ASYNC230
            f.write(str(server.port))
        os.replace(port_file + ".tmp", port_file)
        await asyncio.Event().wait()


def regs_table():  # type: ignore[no-untyped-def]
    from protocols.modbus.config import RegisterTable

    return RegisterTable.HOLDING


class TimedDriver:
    """Wraps a driver to note when each poll starts (for the jitter figure)."""

    def __init__(self, inner: ModbusTcpDriver, starts: list[float]) -> None:
        self._inner = inner
        self._starts = starts
        self.endpoint = inner.endpoint

    def tags(self) -> Sequence[Tag]:
        return self._inner.tags()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(None, None, None)

    async def read(self) -> Sequence[Record]:
        self._starts.append(asyncio.get_running_loop().time())
        return await self._inner.read()


async def gateway(args: argparse.Namespace, port: int) -> dict[str, float]:
    clock = SystemClock()
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=50_000)
    points = [
        ModbusPoint.model_validate({"name": f"r{i}", "address": i, "type": "uint16",
                                    "scale": 0.1, "unit": "bar"})
        for i in range(args.registers)
    ]  # fmt: skip
    ids = [f"dev-{i}" for i in range(args.devices)]
    phases = stagger_phases(ids, args.period)
    starts: dict[str, list[float]] = {device_id: [] for device_id in ids}
    sources = []
    for n, device_id in enumerate(ids):
        conn = ModbusTcpConnection(
            protocol="modbus_tcp", host="127.0.0.1", port=port, unit_id=n % 247 + 1,
            timeout_s=min(0.5, args.period / 2),
        )  # fmt: skip
        tags = [Tag(id=f"{device_id}.{p.name}", asset=device_id, unit=p.unit) for p in points]

        def factory(
            device_id: str = device_id, conn: ModbusTcpConnection = conn, tags: list[Tag] = tags
        ) -> PollingDriver:
            driver = ModbusTcpDriver(device_id, conn, points, tags, clock)
            return TimedDriver(driver, starts[device_id])

        sources.append(
            PollingSource(device_id, factory, queue, clock, period_s=args.period,
                          timeout_s=args.period, backoff=Backoff(0.5, 5.0),
                          phase_s=phases[device_id])
        )  # fmt: skip
    consumed = 0

    async def consume() -> None:
        nonlocal consumed
        while True:
            await queue.get()
            consumed += 1

    tasks = [asyncio.create_task(s.run_source(), name=s.name) for s in sources]
    tasks.append(asyncio.create_task(consume(), name="consumer"))
    await asyncio.sleep(args.warmup)
    loop = asyncio.get_running_loop()
    cpu0, wall0, consumed0 = time.process_time(), loop.time(), consumed
    polls0 = sum(len(v) for v in starts.values())
    await asyncio.sleep(args.seconds)
    cpu1, wall1, consumed1 = time.process_time(), loop.time(), consumed
    polls1 = sum(len(v) for v in starts.values())
    rss = rss_mb()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    wall = wall1 - wall0
    jitters = []
    for series in starts.values():
        inside = [t for t in series if wall0 <= t <= wall1]
        jitters += [abs(b - a - args.period) for a, b in itertools.pairwise(inside)]
    jitters.sort()
    requests_per_poll = len(
        ModbusTcpDriver("x", ModbusTcpConnection(protocol="modbus_tcp", host="h"), points,
                        [Tag(id=p.name, asset="x") for p in points], clock).requests
    )  # fmt: skip
    polls = polls1 - polls0
    registers_s = polls * args.registers / wall if args.registers else 0.0
    cpu = (cpu1 - cpu0) / wall
    errors = sum(s.statistics().errors for s in sources)
    return {
        "requests_s": polls * requests_per_poll / wall,
        "registers_s": registers_s,
        "values_s": (consumed1 - consumed0) / wall,
        "cpu_pct": 100 * cpu,
        "ms_per_1000_regs": 1000 * cpu / (registers_s / 1000) if registers_s else 0.0,
        "p99_jitter_ms": 1000 * jitters[int(0.99 * (len(jitters) - 1))] if jitters else 0.0,
        "rss_mb": rss,
        "errors": errors,
    }


async def idle(args: argparse.Namespace) -> dict[str, float]:
    """The gateway side with nothing to do: the event loop, imports, no devices."""
    await asyncio.sleep(args.warmup)
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(args.seconds)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
    return {"cpu_pct": 100 * cpu, "rss_mb": rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--registers", type=int, default=30)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--idle", action="store_true")
    parser.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.registers))
        return
    if args.idle:
        result = asyncio.run(idle(args))
    else:
        port_file = f"/tmp/bench-polling-{os.getpid()}.port"
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.polling.bench", "--serve", port_file,
             "--registers", str(args.registers)]
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(port_file):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("benchmark server did not start")
                time.sleep(0.05)
            with open(port_file) as f:
                port = int(f.read())
            result = asyncio.run(gateway(args, port))
        finally:
            server.terminate()
            server.wait()
            with contextlib.suppress(FileNotFoundError):
                os.remove(port_file)
    scenario = (
        "idle" if args.idle else f"{args.devices} dev x {args.registers} reg @ {args.period:g} s"
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
          f" Python {platform.python_version()}")  # fmt: skip
    print("| scenario | " + " | ".join(result) + " |")
    print("| --- | " + " | ".join("---" for _ in result) + " |")
    print(f"| {scenario} | " + " | ".join(f"{v:.2f}" for v in result.values()) + " |")


if __name__ == "__main__":

    main()
