"""Vibration severity zones of ISO 10816-3 (2009) / ISO 20816-3 (2022), Annex A.

Broadband velocity RMS 10-1000 Hz measured on the bearing housing of machines above 15 kW.
Zone A: newly commissioned; B: unrestricted long-term operation; C: restricted, plan action;
D: severe enough to cause damage. Boundaries in mm/s, Table A.1 (group 1: large machines,
300 kW - 50 MW) and Table A.2 (group 2: medium machines, 15 - 300 kW).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MachineGroup(enum.IntEnum):
    LARGE = 1  # 300 kW - 50 MW, or electrical machines with shaft height >= 315 mm
    MEDIUM = 2  # 15 - 300 kW, or electrical machines with 160 mm <= shaft height < 315 mm


class Foundation(enum.StrEnum):
    RIGID = "rigid"
    FLEXIBLE = "flexible"


class Zone(enum.StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"

    @property
    def rank(self) -> int:
        return "ABCD".index(self.value)


# (A/B, B/C, C/D) upper boundaries in mm/s.
BOUNDARIES_MM_S: dict[tuple[MachineGroup, Foundation], tuple[float, float, float]] = {
    (MachineGroup.LARGE, Foundation.RIGID): (2.3, 4.5, 7.1),
    (MachineGroup.LARGE, Foundation.FLEXIBLE): (3.5, 7.1, 11.0),
    (MachineGroup.MEDIUM, Foundation.RIGID): (1.4, 2.8, 4.5),
    (MachineGroup.MEDIUM, Foundation.FLEXIBLE): (2.3, 4.5, 7.1),
}


@dataclass(frozen=True, slots=True)
class Severity:
    velocity_rms_mm_s: float
    zone: Zone
    group: MachineGroup
    foundation: Foundation
    boundaries_mm_s: tuple[float, float, float]

    def to_dict(self) -> dict[str, object]:
        return {
            "velocity_rms_mm_s": round(self.velocity_rms_mm_s, 4),
            "zone": self.zone.value,
            "group": int(self.group),
            "foundation": self.foundation.value,
            "boundaries_mm_s": list(self.boundaries_mm_s),
        }


def zone_for(
    velocity_rms_mm_s: float, group: MachineGroup | int, foundation: Foundation | str
) -> Severity:
    """The zone of a velocity RMS value. A value on a boundary belongs to the upper zone."""
    bounds = BOUNDARIES_MM_S[(MachineGroup(group), Foundation(foundation))]
    index = sum(1 for b in bounds if velocity_rms_mm_s >= b)
    return Severity(
        velocity_rms_mm_s=velocity_rms_mm_s,
        zone=Zone("ABCD"[index]),
        group=MachineGroup(group),
        foundation=Foundation(foundation),
        boundaries_mm_s=bounds,
    )
