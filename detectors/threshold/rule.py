"""The `threshold` rule kind: its model in the device file, its checks and its detector."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.threshold.detector import ThresholdDetector
from gateway.core.interfaces import Detector
from gateway.core.plugins import DeviceSpec, RuleIssue, RulePlugin
from gateway.core.records import Priority

RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"


class ThresholdRule(BaseModel):
    """hi / hihi / lo / lolo limits with deadband, on-delay and off-delay."""

    # As strict as the JSON Schema; the priorities opt out because YAML gives them as text.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(pattern=RULE_NAME_PATTERN, description="Rule name, unique in the device.")
    kind: Literal["threshold"] = Field(
        "threshold", description="Rule kind; may be left out for threshold rules."
    )
    signal: str = Field(description="Point name in this device, or a full tag id device.point.")
    hihi: float | None = Field(None, description="High-high limit (raises `priority_hihi`).")
    hi: float | None = Field(None, description="High limit (raises `priority`).")
    lo: float | None = Field(None, description="Low limit (raises `priority`).")
    lolo: float | None = Field(None, description="Low-low limit (raises `priority_hihi`).")
    deadband: float = Field(0.0, ge=0, description="A limit clears only past limit -/+ deadband.")
    on_delay_s: float = Field(0.0, ge=0, description="Limit must be exceeded this long to raise.")
    off_delay_s: float = Field(0.0, ge=0, description="Value must be back this long to clear.")
    priority: Priority = Field(
        Priority.P2, strict=False, description="Priority when the hi/lo limit is crossed."
    )
    priority_hihi: Priority = Field(
        Priority.P1, strict=False, description="Priority when the hihi/lolo limit is crossed."
    )
    message: str = Field("", description="Extra words for the technician, added to the ticket.")


_LIMITS_LOW_TO_HIGH = ("lolo", "lo", "hi", "hihi")


class Threshold:
    kind = "threshold"
    rule_model = ThresholdRule

    def detector(self, rule: ThresholdRule, device: DeviceSpec) -> Detector:
        return ThresholdDetector(
            name=f"{device.id}.{rule.name}",
            asset=device.asset,
            signal_tag=device.signal_tag(rule.signal),
            hihi=rule.hihi,
            hi=rule.hi,
            lo=rule.lo,
            lolo=rule.lolo,
            deadband=rule.deadband,
            on_delay_s=rule.on_delay_s,
            off_delay_s=rule.off_delay_s,
            priority=rule.priority,
            priority_hihi=rule.priority_hihi,
            message=rule.message,
            detector_id=f"threshold:{rule.name}",
            unit=device.unit_of(rule.signal),
        )

    def check(self, rule: ThresholdRule, device: DeviceSpec) -> Iterable[RuleIssue]:
        """Limits in order from the bottom of the scale, at the limit that is out of place."""
        present = [
            (name, value)
            for name in _LIMITS_LOW_TO_HIGH
            if (value := getattr(rule, name)) is not None
        ]
        if not present:
            yield RuleIssue(
                "",
                f"threshold rule `{rule.name}` has no limit; set at least one of hihi, hi, lo, "
                "lolo",
            )
            return
        for (low, low_value), (high, high_value) in itertools.pairwise(present):
            if low_value < high_value:
                continue
            if low == "lolo" and high != "hihi":
                yield RuleIssue(high, f"{high} ({high_value:g}) must be above lolo ({low_value:g})")
            else:
                yield RuleIssue(low, f"{low} ({low_value:g}) must be below {high} ({high_value:g})")


THRESHOLD: RulePlugin = Threshold()
