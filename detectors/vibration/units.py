"""Acceleration units. Everything inside the family works in g; inputs are converted once."""

from __future__ import annotations

import functools

from detectors.vibration.errors import BadSignal

STANDARD_GRAVITY_M_S2 = 9.80665
G_IN_MM_S2 = STANDARD_GRAVITY_M_S2 * 1000.0

_TO_G: dict[str, float] = {
    "": 1.0,  # unit not stated: accelerometers in condition monitoring report g by convention
    "g": 1.0,
    "m/s2": 1.0 / STANDARD_GRAVITY_M_S2,
    "m/s^2": 1.0 / STANDARD_GRAVITY_M_S2,
    "m/s²": 1.0 / STANDARD_GRAVITY_M_S2,
    "mm/s2": 1.0 / (STANDARD_GRAVITY_M_S2 * 1000.0),
    "mg": 1.0e-3,
}


@functools.lru_cache(maxsize=32)  # a live channel sends the same unit with every block
def scale_to_g(unit: str) -> float:
    """Factor turning a value in `unit` into g. Velocity or displacement units are refused."""
    key = unit.strip().lower().replace(" ", "")
    if key not in _TO_G:
        raise BadSignal(
            f"unit `{unit}` is not an acceleration unit the vibration family knows "
            f"(expected one of {sorted(k for k in _TO_G if k)})"
        )
    return _TO_G[key]
