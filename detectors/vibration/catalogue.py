"""The bearing catalogue (`bearings.yaml` beside this module) and geometry given directly.

The catalogue is package data, read through `importlib.resources`, so an installed gateway
finds it wherever the package lives. A site whose bearing is not listed gives the geometry in
its vibration rule instead (the same four keys), with the datasheet it came from in a comment.

Names are matched case-insensitively on the key and on its aliases, ignoring spaces, dashes
and underscores, so `6205`, `skf 6205` and `SKF-6205` all find the same bearing.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from detectors.vibration.bearing import BearingGeometry

DEFAULT_CATALOGUE: Traversable = files("detectors.vibration") / "bearings.yaml"


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def geometry_from_mapping(name: str, entry: Mapping[str, Any]) -> BearingGeometry:
    """Geometry given directly: balls, ball_diameter_mm, pitch_diameter_mm, contact_angle_deg."""
    missing = [k for k in ("balls", "ball_diameter_mm", "pitch_diameter_mm") if k not in entry]
    if missing:
        raise ValueError(f"bearing `{name}`: missing {', '.join(missing)}")
    return BearingGeometry(
        name=name,
        balls=int(entry["balls"]),
        ball_diameter=float(entry["ball_diameter_mm"]),
        pitch_diameter=float(entry["pitch_diameter_mm"]),
        contact_angle_deg=float(entry.get("contact_angle_deg", 0.0)),
    )


class BearingCatalogue:
    def __init__(self, bearings: Mapping[str, BearingGeometry], aliases: Mapping[str, str]):
        self._bearings = dict(bearings)
        self._index = {_key(name): name for name in bearings}
        self._index.update({_key(alias): name for alias, name in aliases.items()})

    @classmethod
    def load(cls, path: Path | Traversable = DEFAULT_CATALOGUE) -> BearingCatalogue:
        """The packaged catalogue, or another file of the same layout."""
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        entries = doc.get("bearings")
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: expected a `bearings:` mapping")
        bearings: dict[str, BearingGeometry] = {}
        aliases: dict[str, str] = {}
        for name, entry in entries.items():
            bearings[name] = geometry_from_mapping(name, entry)
            aliases.update({str(a): name for a in entry.get("aliases", [])})
        return cls(bearings, aliases)

    def names(self) -> list[str]:
        return sorted(self._bearings)

    def get(self, name: str) -> BearingGeometry:
        found = self._index.get(_key(name))
        if found is None:
            raise KeyError(
                f"bearing `{name}` is not in the catalogue (known: {', '.join(self.names())})"
            )
        return self._bearings[found]
