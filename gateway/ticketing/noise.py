"""Alarm-management noise control (ANSI/ISA-18.2 practice): condition flags,
chattering, shelving, and suppression by machine state and by maintenance mode.

These gate what a condition step reports; they never change the four condition states.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable, Mapping

from gateway.core.records import Poll, Quality, Sample, SampleBatch
from gateway.ticketing.policy import AssetProfile


class ConditionFlag(enum.StrEnum):
    SHELVED = "SHELVED"  # an operator shelved it: timed (at most 8 h) or until it clears
    SUPPRESSED = "SUPPRESSED"  # machine stopped, or an upstream link lost
    OUT_OF_SERVICE = "OUT_OF_SERVICE"  # the asset is in maintenance mode
    CHATTERING = "CHATTERING"  # 3 or more active/clear cycles within 60 s
    STALE = "STALE"  # active for longer than 24 h


class ChatterTracker:
    """Counts raises per key in a sliding window; `cycles` or more means chattering."""

    def __init__(self, cycles: int, window_s: float) -> None:
        self._cycles = cycles
        self._window_s = window_s
        self._raises: dict[str, deque[float]] = {}

    def raised(self, key: str, ts: float) -> bool:
        """Record a raise; True when the key is chattering after it."""
        raises = self._raises.setdefault(key, deque(maxlen=self._cycles * 4))
        raises.append(ts)
        return self.is_chattering(key, ts)

    def is_chattering(self, key: str, now: float) -> bool:
        raises = self._raises.get(key)
        if not raises:
            return False
        while raises and raises[0] < now - self._window_s:
            raises.popleft()
        return len(raises) >= self._cycles

    def cycles(self, key: str) -> int:
        return len(self._raises.get(key, ()))

    def raises(self, key: str) -> tuple[float, ...]:
        return tuple(self._raises.get(key, ()))

    def restore(self, key: str, raises: Iterable[float]) -> None:
        """Take back the raise times state.db kept across a restart."""
        self._raises[key] = deque(sorted(raises), maxlen=self._cycles * 4)


class RunStates:
    """Whether each asset runs, from its speed or run-state tag (for run-state suppression).

    An asset without a run tag, or whose run tag has not reported yet, counts as running: the
    gateway suppresses only what it knows to be stopped.
    """

    def __init__(self, profiles: Mapping[str, AssetProfile]) -> None:
        self._by_tag: dict[str, list[AssetProfile]] = {}
        for profile in profiles.values():
            if profile.run_tag is not None:
                self._by_tag.setdefault(profile.run_tag, []).append(profile)
        self._running: dict[str, bool] = {}

    def observe(self, samples: Iterable[Sample]) -> list[tuple[str, bool]]:
        """Feed samples; returns the assets whose running state changed."""
        changes: list[tuple[str, bool]] = []
        if not self._by_tag:
            return changes  # no asset has a run tag: nothing to look at per sample
        if isinstance(samples, SampleBatch):
            # A poll's values are usable: only its run tags are looked at, no sample made.
            for part in samples.parts:
                if isinstance(part, Poll):
                    for tag, value in zip(part.tags, part.values, strict=True):
                        if tag in self._by_tag:
                            self._run_value(tag, value, changes)
                else:
                    self._observe_one(part, changes)
            return changes
        for sample in samples:
            self._observe_one(sample, changes)
        return changes

    def _observe_one(self, sample: Sample, changes: list[tuple[str, bool]]) -> None:
        value = sample.value
        if sample.tag not in self._by_tag or sample.quality is Quality.BAD or value is None:
            return
        if math.isfinite(value):
            self._run_value(sample.tag, value, changes)

    def _run_value(self, tag: str, value: float, changes: list[tuple[str, bool]]) -> None:
        for profile in self._by_tag[tag]:
            running = value > profile.run_above
            if self._running.get(profile.asset) is not running:
                self._running[profile.asset] = running
                changes.append((profile.asset, running))

    def running(self, asset: str) -> bool:
        return self._running.get(asset, True)
