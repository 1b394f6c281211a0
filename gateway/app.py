"""Composition root: runs what `gateway.assembly` builds from a loaded configuration.

Start order is from the sink end (stores, uplink, ticketing, detectors, services), sources
last; stop order is the reverse: sources first, then the queue drained within a deadline, then
the sinks (DESIGN.md section 3). A task that fails ends its task group, and with it the run:
the process exits non-zero and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from gateway.assembly.daemon import assemble
from gateway.config.loader import LoadedConfig, load_config
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import ConfigError
from gateway.core.exit_codes import EX_CONFIG
from gateway.runtime.detector_state import save_detector_state
from gateway.runtime.lifecycle import run_until_stopped
from gateway.runtime.tasks import cancel_and_wait

log = logging.getLogger("gateway")

STOP_DEADLINE_S = 10.0


@dataclass
class Gateway:
    """The running daemon on one configuration. `run()` returns once `stop` is set and
    everything has drained."""

    loaded: LoadedConfig
    clock: Clock

    async def run(self, stop: asyncio.Event, on_ready: Callable[[str], None] = log.info) -> None:
        async with contextlib.AsyncExitStack() as stack:
            daemon = await assemble(self.loaded, self.clock, stack)
            try:
                async with asyncio.TaskGroup() as sink_group:
                    sinks = [sink_group.create_task(run(), name=n) for n, run in daemon.sinks]
                    try:
                        async with asyncio.TaskGroup() as source_group:
                            sources = [
                                source_group.create_task(s.run_source(), name=s.name)
                                for s in daemon.sources
                            ]
                            daemon.health.ready = True
                            settle_heap()
                            on_ready(daemon.status)
                            try:
                                await stop.wait()
                            finally:
                                daemon.health.ready = False
                                log.info("Stopping: sources first, then draining the queue.")
                                await cancel_and_wait(sources)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(daemon.runner.drain(), STOP_DEADLINE_S)
                    finally:
                        await cancel_and_wait(sinks)
            finally:
                save_detector_state(daemon.detectors, daemon.snapshots)


def settle_heap() -> None:
    """Move what start-up built (configuration, plans, detectors, tasks) out of the
    collector's sight: a full collection then walks only what polling allocates, instead of
    every long-lived object, so it does not stall the event loop for tens of milliseconds
    at 500 devices (poll jitter)."""
    gc.collect()
    gc.freeze()


async def run_gateway(loaded: LoadedConfig, clock: Clock | None = None) -> None:
    await run_until_stopped(loaded, lambda config: Gateway(config, clock or SystemClock()))


def main(config_path: str) -> int:
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    asyncio.run(run_gateway(loaded))
    log.info("Gateway stopped cleanly.")
    return 0
