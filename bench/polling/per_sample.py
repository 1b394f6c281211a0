"""CPU per sample of the daemon's per-sample path, in one process and deterministic.

    python -m bench.polling.per_sample --devices 10 --registers 100 --rounds 600
    python -m bench.polling.per_sample --profile /tmp/per_sample.prof

What runs is the daemon's own objects, assembled by `gateway.assembly.daemon.assemble` on the
generated bench site (`bench.polling.site`): for every poll, the Modbus decoding of one block
answer (`protocols.modbus.points.PointDecoder`, the code every Modbus driver hands its
answers to), the source's bookkeeping and queue hand-off (`PollingSource`), the detector
runner with the threshold detectors, telemetry.db packing and its flush (one per simulated
second, as `storage.telemetry_flush_s` does) and ticketing's per-sample observers (evidence
aggregates, run states, links). Left out: the network exchange (the driver's transport), the
uplink and the timers: per poll, not per sample, and not deterministic.

Time is a `ManualClock` advanced by the poll spacing, so the samples' time stamps are those
of a 1 s plant. CPU is `time.process_time` (every thread: SQLite's writer too) over the
measured rounds, printed as µs per sample and ms per 1000 registers/s, and the event loop
thread's alone (`time.thread_time`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.polling.site import write_site
from gateway.assembly import plant
from gateway.assembly.daemon import assemble
from gateway.config.loader import load_config
from gateway.core.clock import ManualClock
from gateway.core.interfaces import Record
from gateway.core.records import Tag
from gateway.pipeline.source import PollingSource
from protocols.modbus.points import PointDecoder, plan_for


async def hand_off(source: PollingSource, records: list[Record]) -> None:
    """The source's own hand-off; a tree from before it was a method of its own does what
    its poll loop did inline."""
    own = getattr(source, "_hand_off", None)
    if own is not None:
        await own(records)
        return
    queue = source._queue
    if queue.maxsize <= 0 or queue.maxsize - queue.qsize() >= len(records):
        for record in records:
            queue.put_nowait(record)
    else:
        for record in records:
            await queue.put(record)


class _Answers:
    """A device answering every planned read: holding register i holds i (as the plant)."""

    def __init__(self, decoder: PointDecoder, counts: Sequence[tuple[int, int]]) -> None:
        self._decoder = decoder
        self._answers = [list(range(address, address + count)) for address, count in counts]
        self.endpoint = "harness"

    def tags(self) -> Sequence[Tag]:
        return self._decoder.tags()

    def read(self) -> list[Record]:
        return self._decoder.records(self._answers, [])


async def run(devices: int, registers: int, rounds: int, warmup: int,
              profile: Path | None, polls_per_batch: int = 1) -> dict[str, float]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="per-sample-") as tmp:
        ports = list(range(20000, 20000 + devices))  # never connected to
        site = write_site(Path(tmp), devices=devices, registers=registers, period_s=1.0,
                          ports=ports, layout="endpoints")  # fmt: skip
        loaded = load_config(site / "gateway.yaml")
        clock = ManualClock()
        async with contextlib.AsyncExitStack() as stack:
            daemon = await assemble(loaded, clock, stack)
            configured = plant.configured_devices(loaded.devices, loaded.protocols)
            answers = {}
            for device in configured:
                points, connection = device.config.values, device.config.connection
                tags = plant.endpoints([device], clock)[0].driver_factory().tags()
                plan = plan_for(points, connection)
                decoder = PointDecoder(points, list(tags), plan, clock)
                answers[device.spec.id] = _Answers(
                    decoder, [(r.address, r.count) for r in plan.scalar_requests]
                )
            sources = [s for s in daemon.sources if isinstance(s, PollingSource)]
            runner = asyncio.create_task(daemon.runner.run_detectors(), name="detectors")
            telemetry = daemon.health.telemetry  # the store the runner writes to
            spacing = 1.0 / len(sources)

            async def one_round() -> None:
                for number, source in enumerate(sources, start=1):
                    device = answers[source.device_id]
                    records = device.read()
                    source._on_good_read(device, records)  # type: ignore[arg-type]
                    await hand_off(source, records)
                    if number % polls_per_batch == 0:
                        await asyncio.sleep(0)  # the runner takes what waits, as in the daemon
                    clock.advance(spacing)
                await asyncio.sleep(0)
                await telemetry.flush()

            for _ in range(warmup):
                await one_round()
            profiler = cProfile.Profile() if profile is not None else None
            cpu0, loop0 = time.process_time(), time.thread_time()
            if profiler is not None:
                profiler.enable()
            for _ in range(rounds):
                await one_round()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(str(profile))
            cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop0
            stored = daemon.runner.statistics().samples_stored
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    samples = rounds * devices * registers
    return {
        "samples": samples,
        "stored_total": stored,
        "us_per_sample": 1e6 * cpu / samples,
        "ms_per_1000_regs_s": 1e3 * cpu / samples * 1000,
        # The event loop's thread only: without SQLite's writer thread.
        "loop_us_per_sample": 1e6 * loop_cpu / samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--registers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=600, help="simulated seconds measured")
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--profile", type=Path)
    parser.add_argument(
        "--polls-per-batch", type=int, default=1,
        help="polls handed over before the runner runs (answers that came in one loop turn)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(run(args.devices, args.registers, args.rounds, args.warmup,
                              args.profile, args.polls_per_batch))  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
