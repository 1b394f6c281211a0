"""The `vibration` rule kind: its model in the device file, its checks and its detector.

Importing this module costs pydantic only: the detector (numpy, scipy) is imported when a
site has a vibration rule to run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.vibration.bearing import BearingGeometry
from detectors.vibration.catalogue import BearingCatalogue
from detectors.vibration.iso20816 import Foundation, MachineGroup
from gateway.core.interfaces import Detector
from gateway.core.plugins import DeviceSpec, Lazy, RuleIssue, RulePlugin

if TYPE_CHECKING:
    from detectors.vibration.detector import VibrationDetector

RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"
_DETECTOR: Lazy[type[VibrationDetector]] = Lazy(
    "detectors.vibration.detector:VibrationDetector"
)


class Strict(BaseModel):
    # As strict as the JSON Schema: `balls: "9"` is an error, not a silent conversion.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BearingGeometryConfig(Strict):
    """Rolling-element bearing geometry, for a bearing not in the packaged catalogue."""

    balls: int = Field(ge=3, le=100, description="Number of rolling elements per row.")
    ball_diameter_mm: float = Field(gt=0, description="Rolling-element diameter in mm.")
    pitch_diameter_mm: float = Field(gt=0, description="Pitch (cage) diameter in mm.")
    contact_angle_deg: float = Field(
        0.0, ge=0, lt=90, description="Contact angle in degrees (0 for deep-groove bearings)."
    )


class VibrationRule(Strict):
    """The vibration family on a waveform signal: ISO 10816-3 severity, unbalance, misalignment,
    looseness and bearing defects, each confirmed over several blocks before a ticket opens."""

    name: str = Field(pattern=RULE_NAME_PATTERN, description="Rule name, unique in the device.")
    kind: Literal["vibration"] = Field(description="Rule kind.")
    signal: str = Field(description="Waveform point of this device, or a full tag id.")
    bearing: str | BearingGeometryConfig | None = Field(
        None,
        description=(
            "Bearing name from the catalogue shipped with the gateway (e.g. SKF-6205 or 6205; "
            "check-config lists the known names for an unknown one), or its geometry."
        ),
    )
    rpm_signal: str | None = Field(
        None, description="Tag giving the running speed in rpm (point name or full tag id)."
    )
    rpm: float | None = Field(
        None, gt=0, description="Fixed running speed in rpm when no speed tag exists."
    )
    machine_group: Literal[1, 2] = Field(
        2, description="ISO 10816-3 machine group: 1 large (>300 kW), 2 medium (15-300 kW)."
    )
    foundation: Literal["rigid", "flexible"] = Field(
        "rigid", description="ISO 10816-3 support: rigid or flexible (selects the zone limits)."
    )
    confirm_blocks: int = Field(
        3,
        ge=1,
        le=100,
        description=(
            "Consecutive analyses (blocks, or rounds of `average_blocks` blocks) of separate "
            "data that must show a fault before it opens, and miss it before it clears. A "
            "block overlapping the last one counted (sent with 50 % overlap, or polled faster "
            "than the sensor refreshes it) repeats samples: it keeps a streak, it does not "
            "lengthen it."
        ),
    )
    baseline_blocks: int = Field(
        20,
        ge=1,
        description=(
            "Analyses (blocks, or rounds of `average_blocks`) of normal running learnt as the "
            "asset's baseline."
        ),
    )
    average_blocks: int = Field(
        1,
        ge=1,
        le=1024,
        description=(
            "Blocks whose spectra are averaged into one analysis (severity, orders, envelope, "
            "bearing combs, confirmation). 1 analyses every block; 64 lets a continuous "
            "25.6 kHz channel cost about twice a bare rFFT per block (bench/vibration)."
        ),
    )


@functools.cache
def catalogue() -> BearingCatalogue:
    """The bearing catalogue, read once per process."""
    return BearingCatalogue.load()


def bearing_geometry(rule: VibrationRule) -> BearingGeometry | None:
    """The rule's bearing: a catalogue name or geometry given directly; raises KeyError for
    a name the catalogue does not know (check-config reports it first)."""
    if rule.bearing is None:
        return None
    if isinstance(rule.bearing, str):
        return catalogue().get(rule.bearing)
    return BearingGeometry(
        name=f"{rule.name}-bearing",
        balls=rule.bearing.balls,
        ball_diameter=rule.bearing.ball_diameter_mm,
        pitch_diameter=rule.bearing.pitch_diameter_mm,
        contact_angle_deg=rule.bearing.contact_angle_deg,
    )


class Vibration:
    kind = "vibration"
    rule_model = VibrationRule

    def detector(self, rule: VibrationRule, device: DeviceSpec) -> Detector:
        return _DETECTOR.get()(
            asset=device.asset,
            tag_id=device.signal_tag(rule.signal),
            geometry=bearing_geometry(rule),
            machine_group=MachineGroup(rule.machine_group),
            foundation=Foundation(rule.foundation),
            rpm_tag=device.signal_tag(rule.rpm_signal) if rule.rpm_signal else None,
            fixed_rpm=rule.rpm,
            confirm_blocks=rule.confirm_blocks,
            baseline_blocks=rule.baseline_blocks,
            average_blocks=rule.average_blocks,
            name=f"{device.id}.{rule.name}",
        )

    def check(self, rule: VibrationRule, device: DeviceSpec) -> Iterable[RuleIssue]:
        speed = rule.rpm_signal
        if speed is not None and "." not in speed and speed not in device.value_names:
            yield RuleIssue("rpm_signal", f"no point `{speed}` in this device")
        if isinstance(rule.bearing, str):
            try:
                catalogue().get(rule.bearing)
            except KeyError as exc:
                yield RuleIssue(
                    "bearing",
                    f"{exc.args[0]}; or give balls, ball_diameter_mm and pitch_diameter_mm",
                )


VIBRATION: RulePlugin = Vibration()
