"""What every source task reports about its devices, whatever its kind (polling, streaming or
a shared line): one shape, read by `status`, the health topic and the metrics."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SourceState(enum.StrEnum):
    STARTING = "starting"
    POLLING = "polling"  # a polled device answers
    STREAMING = "streaming"  # a stream delivers
    DEGRADED = "degraded"  # a unit of a shared line failing: probed less often
    UNREACHABLE = "unreachable"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class DeviceStatistics:
    device: str
    state: SourceState
    reads: int  # successful polls, or records a stream forwarded
    errors: int  # failed connects, reads and broken streams
    reconnects: int  # recoveries after the device was unreachable
    bad_values: int  # BAD samples inside good reads (exception answers, undecodable, stale)
    skipped_ticks: int  # polls dropped because one overran its period (0 for streams)
    last_latency_s: float | None  # a poll's round trip; None for streams
    last_error: str | None
    # Per point (`gateway.pipeline.quality`): UNCERTAIN samples inside good reads,
    # the points whose latest reading is BAD or UNCERTAIN, and configured points of a stream
    # that delivered nothing within a few periods of its start.
    uncertain_values: int = 0
    bad_points: tuple[str, ...] = ()
    uncertain_points: tuple[str, ...] = ()
    silent_points: tuple[str, ...] = ()
