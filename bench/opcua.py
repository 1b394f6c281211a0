"""OPC UA value changes/s decoded, with the CPU it costs.

Run from the repository root:  .venv/bin/python -m bench.opcua   [--seconds 5]

What is measured: the real OpcUaDriver in this process against the simulator's asyncua server in
another process (spawned), so that the server's CPU is not counted. The server changes all N
`Bench.<i>` nodes in a tight loop (each round gives every node a new value). The driver either
subscribes to them (publishing interval 100 ms, sampling as fast as the server can, queue 1, so
that changes between two samples are coalesced as a real server does) or reads them all with
`read()` in a loop (the `mode: poll` path). Counted: records the driver yields (asyncua decoding
of the Publish/Read responses, StatusCode -> quality, timestamps, Sample creation).
Gateway CPU = process time of this process (all its threads) during the window.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from contextlib import aclosing
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any

from gateway.core.clock import SystemClock
from gateway.core.records import Quality, Tag
from protocols.opcua.config import OpcUaConnection, OpcUaNode
from protocols.opcua.driver import OpcUaDriver


@dataclass(frozen=True, slots=True)
class Result:
    scenario: str
    nodes: int
    records: int
    seconds: float
    cpu_s: float
    server_rounds: int

    @property
    def per_second(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_s / self.seconds

    @property
    def cpu_us_per_record(self) -> float:
        return 1e6 * self.cpu_s / max(self.records, 1)


def _serve(nodes: int, ready: Any, stop: Event, rounds: Any) -> None:
    from simulator.opcua_server import run_opcua_server

    async def main() -> None:
        async with run_opcua_server("Bench", bench_nodes=nodes) as sim:
            ready.put(sim.endpoint)
            value = 0.0
            while not stop.is_set():
                value += 1.0
                await sim.bump_bench_nodes(value)
                rounds.value += 1
                await asyncio.sleep(0)  # let the server answer Publish and Read requests

    asyncio.run(main())


def _driver(endpoint: str, nodes: int, mode: str, queue: int) -> OpcUaDriver:
    connection = OpcUaConnection.model_validate(
        {"protocol": "opcua", "endpoint": endpoint, "publishing_interval_ms": 100.0}
    )
    points = [
        OpcUaNode.model_validate(
            {"name": f"v{i}", "node_id": f"ns=2;s=Bench.Bench.{i}", "mode": mode,
             "sampling_interval_ms": 0, "queue_size": queue}
        )
        for i in range(nodes)
    ]  # fmt: skip
    tags = [Tag(id=f"bench.v{i}", asset="bench") for i in range(nodes)]
    return OpcUaDriver("bench", connection, points, tags, SystemClock(), poll_period_s=0.001)


async def _measure(
    endpoint: str,
    nodes: int,
    mode: str,
    queue: int,
    seconds: float,
    rounds: Any,  # a shared multiprocessing counter
) -> Result:
    driver = _driver(endpoint, nodes, mode, queue)
    count = 0
    async with driver, aclosing(driver.records()) as stream:
        # Warm up: the first values of every node, then measure a steady window.
        warm_until = time.monotonic() + 1.0
        async for record in stream:
            assert record.quality is Quality.GOOD, record
            if time.monotonic() >= warm_until:
                break
        rounds_before = rounds.value
        cpu0, t0 = time.process_time(), time.monotonic()
        end = t0 + seconds
        async for _ in stream:
            count += 1
            if count % 256 == 0 and time.monotonic() >= end:
                break
        cpu1, t1 = time.process_time(), time.monotonic()
    scenario = f"subscribe q={queue}" if mode == "subscribe" else "poll (read)"
    return Result(scenario, nodes, count, t1 - t0, cpu1 - cpu0, rounds.value - rounds_before)


def _run(nodes: int, mode: str, queue: int, seconds: float) -> Result:
    ctx = mp.get_context("spawn")
    ready: Any = ctx.Queue()
    stop = ctx.Event()
    rounds = ctx.Value("q", 0)
    server = ctx.Process(target=_serve, args=(nodes, ready, stop, rounds), daemon=True)
    server.start()
    try:
        endpoint = ready.get(timeout=30)
        return asyncio.run(_measure(endpoint, nodes, mode, queue, seconds, rounds))
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per row")
    args = parser.parse_args()
    scenarios = (
        (100, "subscribe", 1),  # coalesced to one value per node per publish
        (100, "subscribe", 1000),  # every change the server makes is delivered
        (1000, "subscribe", 1),
        (1000, "subscribe", 1000),
        (100, "poll", 1),
        (1000, "poll", 1),
    )
    rows = [_run(nodes, mode, queue, args.seconds) for nodes, mode, queue in scenarios]
    print(
        f"{'scenario':<18} {'nodes':>6} {'records/s':>10} {'gateway CPU %':>14} "
        f"{'CPU us/record':>14} {'server changes/s':>17}"
    )
    for r in rows:
        print(
            f"{r.scenario:<18} {r.nodes:>6} {r.per_second:>10.0f} {r.cpu_percent:>14.1f} "
            f"{r.cpu_us_per_record:>14.1f} {r.server_rounds * r.nodes / r.seconds:>17.0f}"
        )


if __name__ == "__main__":
    main()
