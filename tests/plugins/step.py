"""A rule kind that exists only in the tests: `step` raises when a value jumps by more than
`max_step` from one sample to the next. Registered through the rule table alone, to prove that
a rule kind is its folder plus one table line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.interfaces import Detector, Record
from gateway.core.plugins import DeviceSpec, RuleIssue
from gateway.core.records import DerivedTag, FaultCode, Finding, Priority, Sample


class StepRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["step"]
    signal: str
    max_step: float = Field(description="Largest change between two samples.")


class StepDetector:
    derived_tags: tuple[DerivedTag, ...] = ()

    def __init__(self, name: str, asset: str, tag: str, max_step: float) -> None:
        self.name, self.asset, self._tag, self._max = name, asset, tag, max_step
        self._last: float | None = None

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({self._tag})

    def update(self, record: Record) -> list[Finding]:
        if not isinstance(record, Sample) or record.value is None:
            return []
        last, self._last = self._last, record.value
        if last is None or abs(record.value - last) <= self._max:
            return []
        return [
            Finding(
                asset=self.asset,
                fault_code=FaultCode.THRESHOLD_HIGH,
                severity=Priority.P3,
                score=1.0,
                detector=self.name,
                message=f"`{self._tag}` jumped from {last:g} to {record.value:g}.",
                ts=record.ts,
            )
        ]


class Step:
    kind = "step"
    rule_model = StepRule

    def detector(self, rule: StepRule, device: DeviceSpec) -> Detector:
        return StepDetector(
            f"{device.id}.{rule.name}", device.asset, device.signal_tag(rule.signal), rule.max_step
        )

    def check(self, rule: StepRule, device: DeviceSpec) -> Iterable[RuleIssue]:
        if rule.max_step <= 0:
            yield RuleIssue("max_step", "max_step must be positive")


STEP = Step()
