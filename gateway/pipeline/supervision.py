"""What every source task shares: backoff with jitter, the connect timeout, the wording of a
failure, one log line per change of state, and BAD samples while a device cannot be read.

`source.py` (polling, shared RTU lines) and `stream.py` (CAN, OPC UA subscriptions) differ in
how they read; how they fail and recover is the same, so it lives here once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import DeviceTimeout, DriverError
from gateway.core.interfaces import QueueItem
from gateway.core.plugins import Probe
from gateway.core.records import Sample, Tag


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number n (0-based): initial * factor**n, capped, then +-jitter.

    Jitter is applied after the cap so that devices behind one switch that came back together
    do not all retry in the same second forever.
    """

    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.factor < 1:
            raise ValueError(f"invalid backoff {self}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {self.jitter}")

    def delay(self, retry: int, rng: random.Random) -> float:
        # Cap the exponent too: factor**retry overflows a float long before a device returns.
        exponent = min(retry, 64)
        base = min(self.max_s, self.initial_s * self.factor**exponent)
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


# How often a failed endpoint is probed while its source backs off.
PROBE_INTERVAL_S = 2.0


class Recovery:
    """The wait between two attempts: the backoff delay, cut short as soon as the endpoint's
    probe (a TCP connect, a serial port present: no protocol request) sees it come back.

    Only a change cuts it short: the probe must have seen the endpoint unreachable (or the
    attempt itself failed to connect) and then reachable. An endpoint that accepts connections
    but fails its requests is retried on the backoff schedule, not hammered (DESIGN.md 9)."""

    def __init__(self, probe: Probe | None, interval_s: float = PROBE_INTERVAL_S) -> None:
        self._probe = probe
        self._interval = interval_s

    async def wait(
        self,
        delay_s: float,
        *,
        connect_failed: bool,
        every_s: float | None = None,
        on_tick: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Wait up to `delay_s`, calling `on_tick` at once and every `every_s` (BAD samples at
        the poll rate). True when the probe cut the wait short."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        end = now + delay_s
        next_tick = now if on_tick is not None else math.inf
        next_probe = now + self._interval if self._probe is not None else math.inf
        seen_down = connect_failed
        while True:
            now = loop.time()
            if now >= next_tick and on_tick is not None:
                await on_tick()
                next_tick += every_s if every_s else math.inf
            if now >= next_probe and self._probe is not None:
                next_probe = now + self._interval
                if await self._probe():
                    if seen_down:
                        return True
                else:
                    seen_down = True
            wake = min(end, next_tick, next_probe)
            if loop.time() >= end:
                return False
            await asyncio.sleep(max(0.0, wake - loop.time()))


def format_seconds(value: float) -> str:
    """2 -> "2", 1.25 -> "1.2", 47.6 -> "48": enough precision for a log line."""
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}".rstrip("0").rstrip(".")


def failure_reason(failure: BaseException) -> str:
    """A driver's message without its final full stop: log lines add "; retrying in ..."."""
    return (str(failure) or type(failure).__name__).rstrip(".")


async def connect_within(enter: Awaitable[Any], timeout_s: float) -> DriverError | None:
    """Enter a driver within the timeout; the failure as our error, or None when connected."""
    try:
        await asyncio.wait_for(enter, timeout_s)
    except TimeoutError:
        return DeviceTimeout(f"no connection within {format_seconds(timeout_s)} s")
    except DriverError as exc:
        return exc
    return None


def log_outage(
    logger: logging.Logger, what: str, reason: str, delay_s: float, *, first: bool
) -> None:
    """A WARNING when `what` goes down; later failures of the same outage only at DEBUG."""
    if first:
        logger.warning(
            "%s unreachable: %s; retrying in %s s.", what, reason, format_seconds(delay_s)
        )
    else:
        logger.debug(
            "%s still unreachable: %s; retrying in %s s.", what, reason, format_seconds(delay_s)
        )


async def publish_bad(
    queue: asyncio.Queue[QueueItem], tags: Sequence[Tag], ts: float, reason: str
) -> None:
    """One BAD sample per tag, with the reason: never a stale or invented value."""
    for tag in tags:
        await queue.put(Sample.bad(tag.id, ts, reason))
