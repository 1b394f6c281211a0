"""Baseline learning: the features of the first blocks in normal running become the asset's
reference; later blocks get a deviation score (DESIGN.md section 5).

The score is the largest |z| over the tracked features, with each standard deviation floored
at 5 % of its mean: a very steady baseline would otherwise make a harmless change look huge.
The state is a plain dict (`snapshot` / `restore`) so the daemon can persist it in state.db.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_FEATURES = ("velocity_rms_mm_s", "accel_rms_g", "accel_peak_g", "crest_factor", "kurtosis")
STD_FLOOR_FRACTION = 0.05


@dataclass
class _Running:
    """Welford's running mean and variance."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


class Baseline:
    def __init__(self, blocks: int = 20, features: tuple[str, ...] = DEFAULT_FEATURES) -> None:
        if blocks < 2:
            raise ValueError(f"a baseline needs at least 2 blocks, got {blocks}")
        self.blocks = blocks
        self.features = features
        self._stats = {name: _Running() for name in features}

    @property
    def learned(self) -> bool:
        return all(s.n >= self.blocks for s in self._stats.values())

    @property
    def count(self) -> int:
        return min(s.n for s in self._stats.values())

    def learn(self, features: Mapping[str, float]) -> None:
        """Add a block seen in normal running; ignored once the baseline is complete."""
        if self.learned:
            return
        for name, stat in self._stats.items():
            if name in features and math.isfinite(features[name]):
                stat.add(float(features[name]))

    def deviation(self, features: Mapping[str, float]) -> float | None:
        """Largest |z| over the tracked features, or None while still learning."""
        if not self.learned:
            return None
        worst = 0.0
        for name, stat in self._stats.items():
            if name not in features:
                continue
            scale = max(stat.std, STD_FLOOR_FRACTION * abs(stat.mean), 1e-12)
            worst = max(worst, abs(float(features[name]) - stat.mean) / scale)
        return worst

    def reference(self) -> dict[str, dict[str, float]]:
        return {n: {"mean": s.mean, "std": s.std} for n, s in self._stats.items()}

    def snapshot(self) -> dict[str, Any]:
        return {
            "blocks": self.blocks,
            "features": {n: {"n": s.n, "mean": s.mean, "m2": s.m2} for n, s in self._stats.items()},
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> Baseline:
        feats = state["features"]
        baseline = cls(blocks=int(state["blocks"]), features=tuple(feats))
        for name, s in feats.items():
            baseline._stats[name] = _Running(
                n=int(s["n"]), mean=float(s["mean"]), m2=float(s["m2"])
            )
        return baseline
