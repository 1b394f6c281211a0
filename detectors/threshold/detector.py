"""Threshold detector: hi / hihi / lo / lolo limits with deadband, on-delay and off-delay.

Pure and synchronous (DESIGN.md section 5): time comes from `record.ts`, state is a few floats.

Semantics, per direction (high: hi and hihi, fault `threshold.high`; low: lo and lolo, fault
`threshold.low`); the two directions are independent conditions:

- A limit is *exceeded* when the value is strictly beyond it (> hi, < lo).
- It *raises* once exceeded without interruption for `on_delay_s`: an active finding with the
  rule's `priority` (hi, lo) or `priority_hihi` (hihi, lolo). A return inside the limit during
  the on-delay cancels it; the next excursion starts the on-delay again.
- While raised at hi, exceeding hihi for `on_delay_s` *escalates*: a new active finding at
  `priority_hihi`. Falling back below hihi does not de-escalate; the episode keeps its most
  severe level until it clears (the ticket keeps its most urgent priority anyway).
- It *clears* once the value is back inside the least severe limit by the deadband
  (<= hi - deadband, >= lo + deadband) without interruption for `off_delay_s`: an inactive
  finding. Leaving that zone during the off-delay (back into the deadband or beyond the limit)
  cancels it. The deadband is what stops a value hovering at the limit from chattering.
- BAD samples, samples without a finite value and records of other tags are ignored: they
  neither raise nor clear, nor interrupt a running delay. UNCERTAIN samples are evaluated.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.interfaces import Record, ResumedCondition
from gateway.core.records import DerivedTag, FaultCode, Finding, Priority, Quality, Sample


class Direction(enum.Enum):
    HIGH = "high"
    LOW = "low"


@dataclass(frozen=True, slots=True)
class Level:
    """One limit: its name for the technician, its value and the priority it raises."""

    name: str  # "high", "high-high", "low", "low-low"
    limit: float
    priority: Priority


class _Side:
    """The state of one direction. Levels are ordered from least to most severe."""

    def __init__(self, direction: Direction, levels: Sequence[Level], deadband: float) -> None:
        self.direction = direction
        self.levels = tuple(levels)
        self.deadband = deadband
        self.exceeded_since: list[float | None] = [None] * len(self.levels)
        self.active: int | None = None  # index of the most severe level raised this episode
        self.inside_since: float | None = None  # start of the off-delay

    @property
    def fault_code(self) -> FaultCode:
        if self.direction is Direction.HIGH:
            return FaultCode.THRESHOLD_HIGH
        return FaultCode.THRESHOLD_LOW

    @property
    def clear_at(self) -> float:
        """The value the signal must get back to, beyond which it counts as clear."""
        limit = self.levels[0].limit
        return limit - self.deadband if self.direction is Direction.HIGH else limit + self.deadband

    def exceeds(self, value: float, level: Level) -> bool:
        return value > level.limit if self.direction is Direction.HIGH else value < level.limit

    def is_clear(self, value: float) -> bool:
        clear_at = self.clear_at
        return value <= clear_at if self.direction is Direction.HIGH else value >= clear_at


class ThresholdDetector:
    """One threshold rule on one signal. Implements `gateway.core.interfaces.Detector`."""

    def __init__(
        self,
        name: str,
        asset: str,
        signal_tag: str,
        *,
        hihi: float | None = None,
        hi: float | None = None,
        lo: float | None = None,
        lolo: float | None = None,
        deadband: float = 0.0,
        on_delay_s: float = 0.0,
        off_delay_s: float = 0.0,
        priority: Priority = Priority.P2,
        priority_hihi: Priority = Priority.P1,
        message: str = "",
        detector_id: str | None = None,
        unit: str = "",
    ) -> None:
        problems = limit_problems(hihi=hihi, hi=hi, lo=lo, lolo=lolo)
        if deadband < 0 or on_delay_s < 0 or off_delay_s < 0:
            problems.append("deadband and delays must not be negative")
        if problems:
            raise ValueError(f"threshold rule `{name}`: " + "; ".join(problems))
        self._name = name
        self._asset = asset
        self._signal = signal_tag
        self._detector_id = detector_id or name
        self._unit = unit
        self._advice = message.strip()
        self._on_delay = on_delay_s
        self._off_delay = off_delay_s
        self._sides: list[_Side] = []
        high = [
            Level(n, v, p)
            for n, v, p in (("high", hi, priority), ("high-high", hihi, priority_hihi))
            if v is not None
        ]
        low = [
            Level(n, v, p)
            for n, v, p in (("low", lo, priority), ("low-low", lolo, priority_hihi))
            if v is not None
        ]
        if high:
            self._sides.append(_Side(Direction.HIGH, high, deadband))
        if low:
            self._sides.append(_Side(Direction.LOW, low, deadband))

    @property
    def name(self) -> str:
        return self._name

    @property
    def asset(self) -> str:
        return self._asset

    @property
    def derived_tags(self) -> tuple[DerivedTag, ...]:
        return ()

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({self._signal})

    @property
    def detector_id(self) -> str:
        return self._detector_id

    def resume(self, conditions: Sequence[ResumedCondition]) -> None:
        """Conditions of this rule that were active at the last stop resume as raised at
        their least severe level: a normal value then clears them after the off-delay, a value
        still beyond the limit raises nothing new (a value beyond the more severe limit
        escalates as it would have)."""
        mine = {c.fault_code for c in conditions if c.detector == self._detector_id}
        for side in self._sides:
            if side.fault_code in mine and side.active is None:
                side.active = 0
                side.inside_since = None

    def update(self, record: Record) -> list[Finding]:
        if not isinstance(record, Sample) or record.tag != self._signal:
            return []
        value = record.value
        if record.quality is Quality.BAD or value is None or not math.isfinite(value):
            return []
        findings: list[Finding] = []
        for side in self._sides:
            finding = self._update_side(side, value, record.ts)
            if finding is not None:
                findings.append(finding)
        return findings

    def _update_side(self, side: _Side, value: float, ts: float) -> Finding | None:
        for i, level in enumerate(side.levels):
            if side.exceeds(value, level):
                if side.exceeded_since[i] is None:
                    side.exceeded_since[i] = ts
            else:
                side.exceeded_since[i] = None
        due = self._most_severe_due(side, ts)

        if side.active is None:
            if due is None:
                return None
            side.active = due
            side.inside_since = None
            return self._raised(side, value, ts, escalation=False)

        if due is not None and due > side.active:
            side.active = due
            side.inside_since = None
            return self._raised(side, value, ts, escalation=True)

        if not side.is_clear(value):
            side.inside_since = None  # re-exceeded or in the deadband: the off-delay restarts
            return None
        if side.inside_since is None:
            side.inside_since = ts
        if ts - side.inside_since < self._off_delay:
            return None
        raised_level = side.levels[side.active]
        side.active = None
        side.inside_since = None
        return self._cleared(side, raised_level, value, ts)

    def _most_severe_due(self, side: _Side, ts: float) -> int | None:
        due: int | None = None
        for i, since in enumerate(side.exceeded_since):
            if since is not None and ts - since >= self._on_delay:
                due = i
        return due

    def _raised(self, side: _Side, value: float, ts: float, *, escalation: bool) -> Finding:
        assert side.active is not None
        level = side.levels[side.active]
        since = side.exceeded_since[side.active]
        held_s = ts - since if since is not None else 0.0
        exceedance = abs(value - level.limit)
        relation = "above" if side.direction is Direction.HIGH else "below"
        text = (
            f"{self._signal} is {self._quantity(value)}, {relation} its {level.name} limit of"
            f" {self._quantity(level.limit)}"
        )
        if held_s > 0:
            text += f" for {_number(held_s)} s"
        text += "."
        if escalation:
            text = "Worsened: " + text
        return Finding(
            asset=self._asset,
            fault_code=side.fault_code,
            severity=level.priority,
            score=exceedance,
            detector=self._detector_id,
            message=self._with_advice(text),
            ts=ts,
            active=True,
            features={"value": value, "limit": level.limit, "exceedance": exceedance},
            evidence=self._evidence(side, level, held_s, value, cleared=False),
            signal=self._signal,
            value=value,
        )

    def _cleared(self, side: _Side, raised: Level, value: float, ts: float) -> Finding:
        first = side.levels[0]
        band = ""
        if side.deadband > 0:
            sign = "minus" if side.direction is Direction.HIGH else "plus"
            band = f" ({first.name} limit {_number(first.limit)} {sign} deadband)"
        bound = "at or below" if side.direction is Direction.HIGH else "at or above"
        text = (
            f"{self._signal} is back to {self._quantity(value)}, {bound}"
            f" {self._quantity(side.clear_at)}{band}; the {raised.name} condition has cleared."
        )
        return Finding(
            asset=self._asset,
            fault_code=side.fault_code,
            severity=raised.priority,
            score=0.0,
            detector=self._detector_id,
            message=text,
            ts=ts,
            active=False,
            features={"value": value, "limit": first.limit},
            evidence=self._evidence(side, raised, 0.0, value, cleared=True),
            signal=self._signal,
            value=value,
        )

    def _evidence(
        self, side: _Side, level: Level, held_s: float, value: float, *, cleared: bool
    ) -> dict[str, object]:
        evidence: dict[str, object] = {
            "rule": self._name,
            "direction": side.direction.value,
            "level": level.name,
            "limit": level.limit,
            "deadband": side.deadband,
            "on_delay_s": self._on_delay,
            "off_delay_s": self._off_delay,
            "held_s": held_s,
            "readout": self._readout(side, level, held_s, value, cleared=cleared),
        }
        if self._unit:
            evidence["unit"] = self._unit
        return evidence

    def _readout(
        self, side: _Side, level: Level, held_s: float, value: float, *, cleared: bool
    ) -> list[str]:
        """The evidence in sentences a planner reads in the work order, values with units."""
        high = side.direction is Direction.HIGH
        if cleared:
            reading = (
                f"Reading: {self._signal} back to {self._quantity(value)}; the {level.name} "
                f"limit is {self._quantity(level.limit)}."
            )
        else:
            relation = "above" if high else "below"
            reading = (
                f"Reading: {self._signal} at {self._quantity(value)}, "
                f"{self._quantity(abs(value - level.limit))} {relation} its {level.name} limit "
                f"of {self._quantity(level.limit)}."
            )
        lines = [reading]
        if not cleared:
            held = f"Beyond the limit for {_number(held_s)} s"
            if self._on_delay > 0:
                held += f" (the rule asks for {_number(self._on_delay)} s before raising)"
            lines.append(held + ".")
        bound = "at or below" if high else "at or above"
        clears = f"Clears {bound} {self._quantity(side.clear_at)}"
        if side.deadband > 0:
            clears += f" (limit {'minus' if high else 'plus'} a deadband of"
            clears += f" {self._quantity(side.deadband)})"
        if self._off_delay > 0:
            clears += f", held for {_number(self._off_delay)} s"
        lines.append(clears + ".")
        return lines

    def _quantity(self, value: float) -> str:
        return f"{_number(value)} {self._unit}" if self._unit else _number(value)

    def _with_advice(self, text: str) -> str:
        if not self._advice:
            return text
        advice = self._advice if self._advice.endswith((".", "!", "?")) else self._advice + "."
        return f"{text} {advice}"


def limit_problems(
    *, hihi: float | None, hi: float | None, lo: float | None, lolo: float | None
) -> list[str]:
    """What is wrong with a set of limits, in words an OT engineer recognises; empty if fine.

    Exposed so that configuration cross-checks can report the same problems with file and line.
    """
    problems: list[str] = []
    # From the bottom of the scale to the top: each given limit must lie above the previous.
    ordered = (("lolo", lolo), ("lo", lo), ("hi", hi), ("hihi", hihi))
    present = [(k, v) for k, v in ordered if v is not None]
    if not present:
        problems.append("at least one of hihi, hi, lo, lolo is required")
    for key, v in present:
        if not math.isfinite(v):
            problems.append(f"{key} must be a finite number")
    for (k1, v1), (k2, v2) in itertools.pairwise(present):
        if not v1 < v2:
            problems.append(f"{k1} ({_number(v1)}) must be below {k2} ({_number(v2)})")
    return problems


def _number(value: float) -> str:
    """Up to three decimals, no trailing zeros: 92.5, 80, 0.125."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
