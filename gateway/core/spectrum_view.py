"""What the local site page draws of a spectrum analysis: plain values, no numpy.

A `SpectrumDetector` (gateway/core/interfaces.py) builds a `SpectrumView` from one waveform
block and its last diagnosis; the page (`gateway.runtime.site`) only draws it, and keeps one
as the local-only context of a ticket it opened. Raw spectra may be shown on site; they never
leave it: nothing here goes to the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Curve:
    """A spectrum as drawn: point i is at `i * df_hz`, reduced for drawing by keeping the
    largest value of each group of bins (a narrow line is never averaged away)."""

    label: str  # "acceleration spectrum", "envelope spectrum"
    unit: str  # "g", "g²"
    df_hz: float
    values: tuple[float, ...]

    @property
    def top_hz(self) -> float:
        return self.df_hz * max(0, len(self.values) - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "unit": self.unit, "df_hz": self.df_hz,
                "values": list(self.values)}  # fmt: skip

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Curve:
        return Curve(
            label=str(data["label"]),
            unit=str(data["unit"]),
            df_hz=float(data["df_hz"]),
            values=tuple(float(v) for v in data["values"]),
        )


@dataclass(frozen=True, slots=True)
class MarkedLine:
    """A frequency the diagnosis looks at: a bearing defect line or one of its harmonics
    (`BPFO` harmonic 2 is 2 x BPFO), or a shaft order (`1x`)."""

    name: str  # BPFO, BPFI, BSF, FTF, shaft
    harmonic: int
    freq_hz: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "harmonic": self.harmonic, "freq_hz": self.freq_hz}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> MarkedLine:
        return MarkedLine(str(data["name"]), int(data["harmonic"]), float(data["freq_hz"]))


@dataclass(frozen=True, slots=True)
class MatchedLine:
    """A line of the envelope spectrum that the last diagnosis matched to a fault."""

    fault: str  # the fault code, e.g. bearing.outer_race
    label: str  # "1x", "2x", "1x-fr" ...
    freq_hz: float
    snr_db: float

    def to_dict(self) -> dict[str, Any]:
        return {"fault": self.fault, "label": self.label, "freq_hz": self.freq_hz,
                "snr_db": self.snr_db}  # fmt: skip

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> MatchedLine:
        return MatchedLine(
            str(data["fault"]), str(data["label"]), float(data["freq_hz"]), float(data["snr_db"])
        )


@dataclass(frozen=True, slots=True)
class SpectrumView:
    """One waveform block's spectra and what its detector's last diagnosis made of them."""

    tag: str
    asset: str
    ts: float  # the block's timestamp
    spectrum: Curve  # acceleration amplitude spectrum of the block
    envelope: Curve | None  # squared-envelope spectrum of the demodulation band
    band_hz: tuple[float, float] | None  # the demodulation (resonance) band
    shaft_hz: float | None
    speed_source: str
    bearing: str | None
    lines: tuple[MarkedLine, ...]  # defect lines and harmonics at the current speed
    matched: tuple[MatchedLine, ...]  # lines the last diagnosis matched
    verdict: str  # "normal" or the strongest fault code
    faults: tuple[tuple[str, float], ...]  # (fault code, confidence) of the last diagnosis
    zone: str | None  # ISO 20816-3 zone A-D
    velocity_rms_mm_s: float | None
    zone_boundaries_mm_s: tuple[float, ...] = ()
    features: Mapping[str, float] = field(default_factory=dict)
    # feature -> (mean, standard deviation) of the learnt baseline; empty while learning
    baseline: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "asset": self.asset,
            "ts": self.ts,
            "spectrum": self.spectrum.to_dict(),
            "envelope": None if self.envelope is None else self.envelope.to_dict(),
            "band_hz": None if self.band_hz is None else list(self.band_hz),
            "shaft_hz": self.shaft_hz,
            "speed_source": self.speed_source,
            "bearing": self.bearing,
            "lines": [line.to_dict() for line in self.lines],
            "matched": [line.to_dict() for line in self.matched],
            "verdict": self.verdict,
            "faults": [list(fault) for fault in self.faults],
            "zone": self.zone,
            "velocity_rms_mm_s": self.velocity_rms_mm_s,
            "zone_boundaries_mm_s": list(self.zone_boundaries_mm_s),
            "features": dict(self.features),
            "baseline": {name: list(stats) for name, stats in self.baseline.items()},
            "notes": list(self.notes),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> SpectrumView:
        """Raises KeyError, TypeError or ValueError on a document of another shape."""
        band = data["band_hz"]
        envelope = data["envelope"]
        return SpectrumView(
            tag=str(data["tag"]),
            asset=str(data["asset"]),
            ts=float(data["ts"]),
            spectrum=Curve.from_dict(data["spectrum"]),
            envelope=None if envelope is None else Curve.from_dict(envelope),
            band_hz=None if band is None else (float(band[0]), float(band[1])),
            shaft_hz=None if data["shaft_hz"] is None else float(data["shaft_hz"]),
            speed_source=str(data["speed_source"]),
            bearing=None if data["bearing"] is None else str(data["bearing"]),
            lines=tuple(MarkedLine.from_dict(line) for line in data["lines"]),
            matched=tuple(MatchedLine.from_dict(line) for line in data["matched"]),
            verdict=str(data["verdict"]),
            faults=tuple((str(code), float(conf)) for code, conf in data["faults"]),
            zone=None if data["zone"] is None else str(data["zone"]),
            velocity_rms_mm_s=(
                None if data["velocity_rms_mm_s"] is None else float(data["velocity_rms_mm_s"])
            ),
            zone_boundaries_mm_s=tuple(float(b) for b in data["zone_boundaries_mm_s"]),
            features={str(k): float(v) for k, v in data["features"].items()},
            baseline={str(k): (float(v[0]), float(v[1])) for k, v in data["baseline"].items()},
            notes=tuple(str(note) for note in data["notes"]),
        )
