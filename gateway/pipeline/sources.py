"""Source tasks for the endpoints protocol plugins describe: a polling endpoint gets a
`PollingSource`, a stream a `StreamingSource`, a shared line a `SharedLineSource`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from gateway.core.clock import Clock
from gateway.core.interfaces import QueueItem
from gateway.core.plugins import Endpoint, PollingEndpoint, SharedLineEndpoint, StreamingEndpoint
from gateway.pipeline.source import PollingSource, SharedLineSource, stagger_phases
from gateway.pipeline.statistics import DeviceStatistics
from gateway.pipeline.stream import StreamingSource
from gateway.pipeline.supervision import Backoff

# Endpoints polled in one phase of their period (consecutive ones together; a burst is this
# many requests, each to its own endpoint): each wake-up of the process cost 150-250 us of CPU
# on the development VM, about as much as a poll of 30 registers, so 10 devices at 1 s are
# one wake-up a second, not ten. 500 devices x 30 registers at 1 s, CPU per 1000 registers/s:
# 10 a phase 5.4 / 5.1 ms, 25 a phase 4.8 / 4.8 ms, 50 a phase 4.5 / 5.3 ms with p99 jitter
# 8-9 ms against 3-5 (2026-12-07); a phase of 25 polls is about 5 ms of the event loop.
DEVICES_PER_PHASE = 25


class Source(Protocol):
    """One task per endpoint, named as the config reads (`source[press-3]`)."""

    @property
    def name(self) -> str: ...

    def statistics(self) -> tuple[DeviceStatistics, ...]:
        """One entry per device the endpoint serves."""
        ...

    async def run_source(self) -> None:
        """Runs until cancelled."""
        ...


def build_sources(
    endpoints: Sequence[Endpoint], queue: asyncio.Queue[QueueItem], clock: Clock
) -> list[Source]:
    """Polling endpoints sharing a period are staggered over it, so 500 devices at 1 s send
    their requests spread over the second, not in one burst; `DEVICES_PER_PHASE` at a time,
    since each wake-up of the process costs about as much CPU as a poll."""
    by_period: dict[float, list[str]] = {}
    for endpoint in endpoints:
        if isinstance(endpoint, PollingEndpoint):
            by_period.setdefault(endpoint.period_s, []).append(endpoint.key)
    phases = {
        key: phase
        for period, keys in by_period.items()
        for key, phase in stagger_phases(keys, period, per_phase=DEVICES_PER_PHASE).items()
    }
    return [_source(endpoint, queue, clock, phases) for endpoint in endpoints]


def _source(
    endpoint: Endpoint,
    queue: asyncio.Queue[QueueItem],
    clock: Clock,
    phases: dict[str, float],
) -> Source:
    if isinstance(endpoint, PollingEndpoint):
        return PollingSource(
            device_id=endpoint.key,
            driver_factory=endpoint.driver_factory,
            queue=queue,
            clock=clock,
            period_s=endpoint.period_s,
            timeout_s=endpoint.timeout_s,
            phase_s=phases.get(endpoint.key, 0.0),
            probe=endpoint.probe,
        )
    if isinstance(endpoint, StreamingEndpoint):
        backoff = None
        if endpoint.reconnect_s is not None:
            backoff = Backoff(initial_s=endpoint.reconnect_s[0], max_s=endpoint.reconnect_s[1])
        return StreamingSource(
            endpoint.key,
            endpoint.driver_factory,
            queue,
            clock,
            backoff=backoff,
            probe=endpoint.probe,
            silence_limit_s=endpoint.silence_limit_s,
        )
    if isinstance(endpoint, SharedLineEndpoint):
        periods = endpoint.periods_s
        return SharedLineSource(
            endpoint.key,
            endpoint.line_factory,
            queue,
            clock,
            periods_s=periods,
            default_period_s=min(periods.values()),
            probe=endpoint.probe,
        )
    raise TypeError(f"unknown endpoint {endpoint!r}")
