"""The daemon's life under a service manager: signals, reload and systemd notification.

SIGTERM/SIGINT stop the pipeline (it drains within its deadline). SIGHUP validates the
configuration files again and, only when they pass, ends the running pipeline so that a new
one starts with the new configuration; a configuration that fails is logged and the running
one is kept. Committed state lives in state.db, so nothing is lost across the in-process
restart, and the uplink reconnects with the same persistent session.

systemd (Type=notify, sd_notify(3)): `READY=1` once the sources run; on a reload
`RELOADING=1` with `MONOTONIC_USEC` before the old pipeline stops and `READY=1` when the new
one runs; `STOPPING=1` only when the daemon is really stopping, since systemd takes it from a
running service as the start of a stop. The watchdog heartbeat runs across reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.config.loader import LoadedConfig, load_config, systemd_state_directory
from gateway.core.errors import ConfigError
from gateway.runtime.sdnotify import SystemdNotifier

log = logging.getLogger("gateway")


class Pipeline(Protocol):
    """One run of the gateway on one configuration; returns once `stop` is set and drained.
    `on_ready` is called with a one-line status once every source runs."""

    async def run(self, stop: asyncio.Event, on_ready: Callable[[str], None]) -> None: ...


PipelineFactory = Callable[[LoadedConfig], Pipeline]


class Reloader:
    """Validates the configuration on SIGHUP; `restart` is set only for one that passes."""

    def __init__(self, loaded: LoadedConfig, notifier: SystemdNotifier) -> None:
        self.loaded = loaded
        self.pending: LoadedConfig | None = None
        self.restart = asyncio.Event()
        self._notifier = notifier
        self._tasks: set[asyncio.Task[None]] = set()

    def on_sighup(self) -> None:
        task = asyncio.create_task(self._validate(), name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _validate(self) -> None:
        path = self.loaded.gateway_file
        log.info("SIGHUP: validating `%s` before reloading.", path)
        try:
            candidate = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("Reload refused: %s", problem)
            log.error(
                "Reload refused: %d problem(s) in the new configuration; the running one is kept.",
                len(exc.problems),
            )
            return
        self.pending = candidate
        self._notifier.reloading(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        self.restart.set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def run_until_stopped(
    loaded: LoadedConfig,
    make_pipeline: PipelineFactory,
    notifier: SystemdNotifier | None = None,
) -> None:
    """Run pipelines one after another (one per accepted reload) until SIGTERM or SIGINT."""
    notifier = notifier or SystemdNotifier()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloader = Reloader(loaded, notifier)

    def on_stop() -> None:
        stop.set()
        reloader.restart.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, reloader.on_sighup)
    watchdog = (
        asyncio.create_task(notifier.run_watchdog(), name="watchdog")
        if notifier.watchdog_interval_s is not None
        else None
    )
    try:
        while True:
            _log_state_location(reloader.loaded)
            pipeline = make_pipeline(reloader.loaded)
            await _run_one(pipeline, reloader.restart, notifier)
            if stop.is_set() or reloader.pending is None:
                break
            reloader.loaded, reloader.pending = reloader.pending, None
            reloader.restart.clear()
            log.info("Configuration reloaded from `%s`.", reloader.loaded.gateway_file)
    finally:
        notifier.stopping()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await reloader.close()
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog


def _log_state_location(loaded: LoadedConfig) -> None:
    location = loaded.state_location()
    log.info("State in `%s`, from %s.", location.path, location.origin)
    systemd = systemd_state_directory(os.environ)
    if systemd is not None and systemd != location.path:
        log.warning(
            "storage.directory `%s` is used, not the unit's StateDirectory `%s`: under "
            "ProtectSystem=strict it must be listed in ReadWritePaths=.",
            location.path,
            systemd,
        )


def _run_one(
    pipeline: Pipeline, restart: asyncio.Event, notifier: SystemdNotifier
) -> Awaitable[None]:
    def on_ready(status: str) -> None:
        log.info(status)
        notifier.ready(status)

    return pipeline.run(restart, on_ready)
