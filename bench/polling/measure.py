"""The measured gateway process: loads a site folder and runs the pipeline exactly as
`gateway/app.py` wires it for Modbus TCP devices, then prints one JSON line of figures.

    python -m bench.polling.measure SITE_DIR --seconds 20 --warmup 3

Included: `load_config`, `build_sources` (PollingSource per device, staggered phases,
ModbusTcpDriver, read plan, decoding to engineering units), the bounded queue of the app's
size, `DetectorRunner` with `build_detectors` (threshold detectors), every sample written to
a real `TelemetryStore` (telemetry.db, WAL, synchronous=NORMAL, one row per device and poll,
written every `storage.telemetry_flush_s` as the daemon does) with its flusher and retention
tasks.
Not included: ticketing and state.db (findings go to a counter; none are raised), the MQTT
uplink, summaries and the health topic.

CPU is this process's CPU time (`time.process_time`: every thread, so the SQLite writer
thread too), over the measured window only. Jitter comes from the stored samples: for the
watched tag of each device, |interval between two consecutive sample timestamps - period|.
A sample is stamped when its answer is decoded, so server latency counts against us too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import json
import logging
import sys
import time
from pathlib import Path

from bench.polling.site import WATCHED_POINT
from gateway.assembly import plant
from gateway.assembly.daemon import QUEUE_SIZE
from gateway.assembly.detectors import build_detectors
from gateway.config.loader import load_config
from gateway.core.clock import SystemClock
from gateway.core.interfaces import QueueItem
from gateway.core.records import Finding
from gateway.pipeline.record_queue import RecordQueue
from gateway.pipeline.runner import DetectorRunner
from gateway.pipeline.source import PollingSource
from gateway.pipeline.sources import build_sources
from gateway.store import TelemetryStore
from protocols.modbus.config import ModbusTcpConnection
from protocols.modbus.points import plan_for

STOP_WAIT_S = 2.0


def rss_mb() -> tuple[float, float]:
    """Resident set size now and at its peak, in MB."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))]


async def cancel_all(tasks: list[asyncio.Task[None]]) -> int:
    """Cancel and wait; returns how many tasks ignored the first cancel (each is named on
    stderr). On Python 3.11 `asyncio.wait_for` can swallow a cancel that arrives as its inner
    awaitable completes, and a polling loop then carries on: cancel those again."""
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
    stubborn = len(pending)
    for task in pending:
        print(f"task `{task.get_name()}` ignored a cancel; cancelling it again", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_WAIT_S)
    return stubborn


async def measure(
    site: Path, seconds: float, warmup: float, profile: Path | None = None
) -> dict[str, float]:
    """Run the pipeline on `site`; `profile` gets a cProfile dump of the event-loop thread
    over the measured window only."""
    loaded = load_config(site)
    clock = SystemClock()
    devices = plant.configured_devices(loaded.devices, loaded.protocols)
    storage = loaded.gateway.storage
    findings = 0

    async def on_finding(finding: Finding) -> None:
        nonlocal findings
        findings += 1

    telemetry = await TelemetryStore.open(
        loaded.state_directory / "telemetry.db", flush_interval_s=storage.telemetry_flush_s
    )
    try:
        queue: asyncio.Queue[QueueItem] = RecordQueue(maxsize=QUEUE_SIZE)
        runner = DetectorRunner(
            queue,
            build_detectors(devices, loaded.rules),
            on_finding,
            telemetry.write_samples,
            clock,
            store_waveform=telemetry.write_waveform,
        )
        sources = build_sources(plant.endpoints(devices, clock), queue, clock)
        polling = [s for s in sources if isinstance(s, PollingSource)]
        retention = telemetry.run_retention(
            clock,
            max_age_s=storage.telemetry_retention_h * 3600.0,
            max_bytes=int(storage.telemetry_max_mb * 1e6),
            period_s=storage.retention_check_s,
        )
        sink_tasks = [
            asyncio.create_task(runner.run_detectors(), name="detectors"),
            asyncio.create_task(retention, name="retention"),
            asyncio.create_task(telemetry.run_flusher(), name="telemetry-flush"),
        ]
        source_tasks = [asyncio.create_task(s.run_source(), name=s.name) for s in sources]

        def polls() -> int:
            return sum(stats.reads for s in polling for stats in s.statistics())

        await asyncio.sleep(warmup)
        profiler = cProfile.Profile() if profile is not None else None
        cpu0, mono0, wall0 = time.process_time(), time.monotonic(), clock.now()
        loop_cpu0 = time.thread_time()
        polls0, stored0 = polls(), telemetry.statistics().samples_written
        if profiler is not None:
            profiler.enable()
        await asyncio.sleep(seconds)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        loop_cpu1 = time.thread_time()
        cpu1, mono1, wall1 = time.process_time(), time.monotonic(), clock.now()
        polls1, stored1 = polls(), telemetry.statistics().samples_written
        rss, rss_peak = rss_mb()
        queue_depth = queue.qsize()

        # Stop as the app does: sources first, then drain the queue, then the sinks.
        stubborn = await cancel_all(source_tasks)
        await runner.drain()
        stubborn += await cancel_all(sink_tasks)

        jitters: list[float] = []
        for device in devices:
            stored = await telemetry.read_samples(device.spec.tag_id(WATCHED_POINT), wall0, wall1)
            jitters += [
                abs(b.ts - a.ts - device.spec.poll_period_s) for a, b in itertools.pairwise(stored)
            ]
        errors = sum(st.errors for s in polling for st in s.statistics())
        skipped = sum(st.skipped_ticks for s in polling for st in s.statistics())
    finally:
        await telemetry.close()

    wall = mono1 - mono0
    cpu = (cpu1 - cpu0) / wall
    # Every device of the generated site has the same plan: requests and registers per poll.
    first = devices[0]
    assert isinstance(first.config.connection, ModbusTcpConnection)
    plan = plan_for(first.config.values, first.config.connection).all_requests
    requests_per_poll = len(plan)
    registers_per_poll = sum(request.count for request in plan)
    registers_s = (polls1 - polls0) * registers_per_poll / wall
    return {
        "requests_s": (polls1 - polls0) * requests_per_poll / wall,
        "registers_s": registers_s,
        "stored_s": (stored1 - stored0) / wall,
        "cpu_pct": 100 * cpu,
        # The event-loop thread; the rest is mostly the SQLite writer thread (aiosqlite).
        "loop_cpu_pct": 100 * (loop_cpu1 - loop_cpu0) / wall,
        "ms_per_1000_regs": 1000 * cpu / (registers_s / 1000) if registers_s else 0.0,
        "p99_jitter_ms": 1000 * percentile(jitters, 0.99),
        "rss_mb": rss,
        "rss_peak_mb": rss_peak,
        "errors": errors,
        "skipped": skipped,
        "findings": findings,
        "queue_end": queue_depth,
        "stubborn_tasks": stubborn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--profile", type=Path, help="cProfile dump of the measured window")
    args = parser.parse_args()
    # The daemon logs state changes only; at INFO the start-up read plans would flood stdout.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = asyncio.run(measure(args.site, args.seconds, args.warmup, args.profile))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
