"""Bearing geometry and its kinematic defect frequencies.

The standard rolling-element kinematics (outer race fixed, pure rolling), e.g. Randall & Antoni,
"Rolling element bearing diagnostics -- a tutorial", MSSP 25 (2011), eq. (1)-(4):

    BPFO = n/2 * fr * (1 - d/D cos a)      ball pass, outer race
    BPFI = n/2 * fr * (1 + d/D cos a)      ball pass, inner race
    FTF  = 1/2 * fr * (1 - d/D cos a)      cage (fundamental train)
    BSF  = D/(2d) * fr * (1 - (d/D cos a)^2)   ball spin; a ball defect strikes both races, so
                                                its envelope line is usually 2 x BSF.

Real bearings slip by 1-2 %, so matching uses a relative tolerance (see `matching.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.core.records import FaultCode


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    """Rolling elements per row, ball and pitch diameters (same unit), contact angle."""

    name: str
    balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.balls < 3:
            raise ValueError(f"bearing `{self.name}`: balls must be at least 3, got {self.balls}")
        if not 0 < self.ball_diameter < self.pitch_diameter:
            raise ValueError(
                f"bearing `{self.name}`: need 0 < ball diameter < pitch diameter, got "
                f"{self.ball_diameter} and {self.pitch_diameter}"
            )
        if not 0 <= self.contact_angle_deg < 90:
            raise ValueError(
                f"bearing `{self.name}`: contact angle must be in [0, 90) degrees, "
                f"got {self.contact_angle_deg}"
            )

    @property
    def _ratio(self) -> float:
        return (
            self.ball_diameter
            / self.pitch_diameter
            * math.cos(math.radians(self.contact_angle_deg))
        )

    def multipliers(self) -> DefectMultipliers:
        """Defect frequencies per Hz of shaft rotation."""
        r = self._ratio
        n = self.balls
        return DefectMultipliers(
            bpfo=n / 2 * (1 - r),
            bpfi=n / 2 * (1 + r),
            ftf=0.5 * (1 - r),
            bsf=self.pitch_diameter / (2 * self.ball_diameter) * (1 - r * r),
        )

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "balls": self.balls,
            "ball_diameter": self.ball_diameter,
            "pitch_diameter": self.pitch_diameter,
            "contact_angle_deg": self.contact_angle_deg,
        }


@dataclass(frozen=True, slots=True)
class DefectMultipliers:
    """Defect frequencies as multiples of the shaft frequency."""

    bpfo: float
    bpfi: float
    ftf: float
    bsf: float

    def at(self, shaft_hz: float) -> DefectFrequencies:
        return DefectFrequencies(
            shaft=shaft_hz,
            bpfo=self.bpfo * shaft_hz,
            bpfi=self.bpfi * shaft_hz,
            ftf=self.ftf * shaft_hz,
            bsf=self.bsf * shaft_hz,
        )


@dataclass(frozen=True, slots=True)
class DefectFrequencies:
    """Defect frequencies in Hz at one running speed."""

    shaft: float
    bpfo: float
    bpfi: float
    ftf: float
    bsf: float

    @property
    def two_bsf(self) -> float:
        return 2 * self.bsf

    def fundamental(self, code: FaultCode) -> float:
        """The line a fault of this kind repeats at in the envelope spectrum."""
        return {
            FaultCode.BEARING_OUTER_RACE: self.bpfo,
            FaultCode.BEARING_INNER_RACE: self.bpfi,
            FaultCode.BEARING_ROLLING_ELEMENT: self.bsf,
            FaultCode.BEARING_CAGE: self.ftf,
        }[code]

    def to_dict(self) -> dict[str, float]:
        return {
            "shaft_hz": round(self.shaft, 3),
            "bpfo_hz": round(self.bpfo, 3),
            "bpfi_hz": round(self.bpfi, 3),
            "bsf_hz": round(self.bsf, 3),
            "two_bsf_hz": round(self.two_bsf, 3),
            "ftf_hz": round(self.ftf, 3),
        }
