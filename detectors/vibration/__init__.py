"""Vibration family: spectrum, envelope, bearing, ISO 10816-3 / 20816-3 severity, baseline.

Public entry points:
- `diagnose(signal, fs, shaft_hz=..., geometry=...)` -> `Diagnosis` (offline, whole record);
- `VibrationDetector` (live `Waveform` blocks, Detector protocol of gateway.core.interfaces);
- `BearingGeometry`, `BearingCatalogue` (bearings.yaml, shipped beside it);
- `read_recording(path)` for the `analyze` command.
"""

from detectors.vibration.bearing import BearingGeometry, DefectFrequencies
from detectors.vibration.catalogue import BearingCatalogue, geometry_from_mapping
from detectors.vibration.detector import VibrationDetector
from detectors.vibration.diagnose import Diagnosis, FaultCall, Settings, diagnose
from detectors.vibration.errors import BadSignal
from detectors.vibration.iso20816 import Foundation, MachineGroup, Zone, zone_for

__all__ = [
    "BadSignal",
    "BearingCatalogue",
    "BearingGeometry",
    "DefectFrequencies",
    "Diagnosis",
    "FaultCall",
    "Foundation",
    "MachineGroup",
    "Settings",
    "VibrationDetector",
    "Zone",
    "diagnose",
    "geometry_from_mapping",
    "zone_for",
]
