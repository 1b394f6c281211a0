"""Vibration family: spectrum, envelope, bearing, ISO 10816-3 / 20816-3 severity, baseline.

Public entry points:
- `detectors.vibration.diagnose.diagnose(signal, fs, shaft_hz=..., geometry=...)` ->
  `Diagnosis` (offline, whole record; not re-exported here: the name is its module's too);
- `VibrationDetector` (live `Waveform` blocks, Detector protocol of gateway.core.interfaces);
- `BearingGeometry`, `BearingCatalogue` (bearings.yaml, shipped beside it);
- `read_recording(path)` for the `analyze` command.

The names are imported from their modules on first use (PEP 562), so that reading a site's
configuration (`detectors.vibration.rule`) does not load numpy and scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "BearingGeometry": "bearing",
    "DefectFrequencies": "bearing",
    "BearingCatalogue": "catalogue",
    "geometry_from_mapping": "catalogue",
    "VibrationDetector": "detector",
    "Diagnosis": "diagnose",
    "FaultCall": "diagnose",
    "Settings": "diagnose",
    "BadSignal": "errors",
    "Foundation": "iso20816",
    "MachineGroup": "iso20816",
    "Zone": "iso20816",
    "zone_for": "iso20816",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module `detectors.vibration` has no attribute `{name}`")
    return getattr(importlib.import_module(f"detectors.vibration.{module}"), name)
