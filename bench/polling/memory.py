"""Where the daemon's memory goes: the daemon run in this process under
tracemalloc on the benchmark plant, the top allocation sites after a warm-up.

    .venv/bin/python -m bench.polling.memory --devices 500 --seconds 40 --top 25

The whole daemon as `gateway.app` runs it (a real mosquitto, nothing acknowledging); Python
allocations only (tracemalloc does not see SQLite's page cache or the interpreter's own
arenas, which `VmRSS` includes). tracemalloc slows everything down: the figures are sizes,
not speeds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import tracemalloc
from pathlib import Path

from bench.polling.bench import Scenario, rss_mb, start_plant
from bench.polling.site import write_site
from gateway.app import Gateway
from gateway.config.loader import load_config
from gateway.core.clock import SystemClock
from tests.support.broker import MosquittoBroker


async def profile(devices: int, registers: int, seconds: float, top: int, group: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, MosquittoBroker() as broker:
        folder = Path(tmp)
        plant, ports = start_plant(folder, Scenario("", devices, registers, 1.0), "endpoints", 0)
        try:
            site = write_site(
                folder / "site", devices=devices, registers=registers, period_s=1.0,
                ports=ports, layout="endpoints", broker_port=broker.port,
            )  # fmt: skip
            tracemalloc.start(1)
            stop = asyncio.Event()
            gateway = Gateway(load_config(site / "gateway.yaml"), SystemClock())
            task = asyncio.create_task(gateway.run(stop, on_ready=lambda _: None))
            await asyncio.sleep(seconds)
            snapshot = tracemalloc.take_snapshot()
            traced, _ = tracemalloc.get_traced_memory()
            rss, _ = rss_mb("self")
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            plant.terminate()
            plant.wait()
    stats = snapshot.statistics(group)
    print(f"{devices} devices x {registers} registers after {seconds:g} s: traced "
          f"{traced / 1e6:.1f} MB, {traced / devices / 1e3:.1f} kB per device, RSS {rss:.1f} MB"
          " (with tracemalloc's own)")  # fmt: skip
    for stat in stats[:top]:
        frame = stat.traceback[0]
        name = frame.filename.split("site-packages/")[-1].split("wt-scale/")[-1]
        where = f"{name}:{frame.lineno}"
        print(f"{stat.size / 1e6:8.2f} MB {stat.count:9d} blocks  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--registers", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", choices=("lineno", "filename"), default="lineno")
    args = parser.parse_args()
    asyncio.run(profile(args.devices, args.registers, args.seconds, args.top, args.group))


if __name__ == "__main__":
    main()
