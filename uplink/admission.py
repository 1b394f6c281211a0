"""Per-actor rate limits for inbound commands.

A token bucket per actor (the body's `actor`, or `-` when it names none): `rate_per_s` tokens a
second up to `burst`. A command that finds the bucket empty is rejected at once with a reply
saying when to retry, before it costs a queue slot or a state.db write, so one flooding sender
cannot delay the others or the acks. Acks have buckets of their own (a central system
acknowledging a backlog after an outage sends many at once, and they only settle messages).

The number of buckets is bounded: a sender inventing a new actor per command gets the least
recently used buckets evicted, not unbounded memory. Pure and clocked by the caller (monotonic
seconds), so it is tested without sleeping.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

MAX_ACTORS = 1024


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0) or self.burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class ActorRateLimiter:
    def __init__(self, limit: RateLimit, max_actors: int = MAX_ACTORS) -> None:
        self.limit = limit
        self._max_actors = max_actors
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.limited = 0

    def retry_after(self, actor: str, now: float) -> float | None:
        """Take one token for `actor`; None when admitted, else the seconds until a token."""
        bucket = self._buckets.pop(actor, None)
        if bucket is None:
            bucket = _Bucket(float(self.limit.burst), now)
            while len(self._buckets) >= self._max_actors:
                self._buckets.popitem(last=False)
        else:
            elapsed = max(0.0, now - bucket.at)
            refill = elapsed * self.limit.rate_per_s
            bucket.tokens = min(float(self.limit.burst), bucket.tokens + refill)
            bucket.at = now
        self._buckets[actor] = bucket
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        self.limited += 1
        return (1.0 - bucket.tokens) / self.limit.rate_per_s
