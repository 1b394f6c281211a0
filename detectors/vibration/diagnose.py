"""One diagnosis from everything the family measures: features, ISO zone, orders, bearing combs.

The same `Settings` apply to every machine and every record; nothing is tuned per file.
`analyze` (a whole record, blocks averaged) and the live detector (one block, or a round of
averaged blocks) both end in `analyse_spectra`, so they reach their verdicts the same way: the
same envelope bank, chance law, evidence rule and corrections (`bearing_screen.py`).
Confidence of a bearing fault is the statistical surprise of its harmonics: their chance p
under noise, corrected for every candidate fundamental, band and comb tried, mapped to 0 at
p = 1e-2 and 0.5 at p = 1e-4, each further factor of 100 halving the remaining doubt; a fault
is reported from confidence 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.vibration.bearing import BearingGeometry, DefectFrequencies
from detectors.vibration.bearing_screen import (
    CARRIER_NAME,
    BearingScreen,
    comb_specs,
    highest_line_hz,
    reach_bins,
    screen_bearing,
)
from detectors.vibration.checks import block_length, check_signal, split_blocks
from detectors.vibration.envelope import (
    Band,
    EnvelopeBank,
    envelope_bank,
    filter_bank,
    prewhiten,
)
from detectors.vibration.errors import BadSignal
from detectors.vibration.features import Features, compute_features
from detectors.vibration.iso20816 import Foundation, MachineGroup, Severity, Zone, zone_for
from detectors.vibration.matching import CombSpec
from detectors.vibration.orders import OrderReadings, machine_fault_confidences, order_readings
from detectors.vibration.spectrum import (
    FloatArray,
    Spectra,
    SpectralPeak,
    block_spectra,
    default_bands,
    top_peaks,
)
from detectors.vibration.speed import estimate_shaft_hz
from gateway.core.records import FaultCode

SEVERITY_CONFIDENCE = {Zone.C: 0.7, Zone.D: 0.95}


@dataclass(frozen=True, slots=True)
class Settings:
    """Physically motivated parameters, identical for every record."""

    slip_tolerance: float = 0.03  # real bearings slip 1-2 %; hand-read speeds add ~1 %
    race_harmonics: int = 3
    ball_harmonics: int = 4  # BSF, 2xBSF (both races struck), 3x, 4x
    cage_harmonics: int = 3
    max_band_level: int = 4  # filter bank down to bands fs/32 wide
    report_confidence: float = 0.5
    overlap: float = 0.5
    speed_range_hz: tuple[float, float] = (5.0, 100.0)
    bands: tuple[tuple[float, float], ...] | None = None  # None: `default_bands(fs)`


@dataclass(frozen=True, slots=True)
class FaultCall:
    code: str
    confidence: float
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "confidence": round(self.confidence, 3),
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Diagnosis:
    verdict: str
    faults: list[FaultCall]
    features: Features
    iso: Severity
    shaft_hz: float | None
    speed_source: str
    bearing: str | None
    defect: DefectFrequencies | None
    band: Band | None  # band of the bearing call, None without one
    envelope_peaks: list[SpectralPeak]  # strongest lines of that band (or the whole band)
    orders: OrderReadings | None
    blocks: int
    block_length: int
    fs: float
    screened: dict[str, float] = field(default_factory=dict)  # every comb's confidence
    bands_screened: int = 0
    best_bands: dict[FaultCode, Band] = field(default_factory=dict)  # per comb
    focus_bands: tuple[Band, ...] = ()  # the whole band and each comb's best, once
    withheld: list[FaultCall] = field(default_factory=list)  # passed, another location first
    not_dominant: list[str] = field(default_factory=list)  # passed, band led by another line
    notes: list[str] = field(default_factory=list)

    def fault(self, code: str) -> FaultCall | None:
        return next((f for f in self.faults if f.code == code), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "faults": [f.to_dict() for f in self.faults],
            "features": self.features.to_dict(),
            "iso": self.iso.to_dict(),
            "speed": {
                "shaft_hz": None if self.shaft_hz is None else round(self.shaft_hz, 3),
                "rpm": None if self.shaft_hz is None else round(self.shaft_hz * 60, 1),
                "source": self.speed_source,
            },
            "bearing": self.bearing,
            "defect_frequencies": None if self.defect is None else self.defect.to_dict(),
            "envelope_band": None if self.band is None else self.band.to_dict(),
            "envelope_peaks": [
                {"freq_hz": round(p.freq_hz, 2), "level_db": round(p.snr_db, 1)}
                for p in self.envelope_peaks
            ],
            "orders": None if self.orders is None else self.orders.to_dict(),
            "screened": {k: round(v, 3) for k, v in self.screened.items()},
            "withheld": [f.to_dict() for f in self.withheld],
            "not_dominant": list(self.not_dominant),
            "analysis": {
                "fs_hz": self.fs,
                "blocks": self.blocks,
                "block_length": self.block_length,
                "bands_screened": self.bands_screened,
            },
            "notes": list(self.notes),
        }


def bearing_combs(defect: DefectFrequencies, settings: Settings) -> dict[FaultCode, CombSpec]:
    return comb_specs(
        defect, settings.race_harmonics, settings.ball_harmonics, settings.cage_harmonics
    )


def check_bearing_frequencies(defect: DefectFrequencies, fs: float, settings: Settings) -> None:
    """Envelope analysis needs a carrier band above the defect lines: they must sit below fs/4."""
    top = highest_line_hz(bearing_combs(defect, settings), settings.slip_tolerance)
    if top >= fs / 4:
        raise BadSignal(
            f"bearing frequencies out of reach: at {defect.shaft * 60:.0f} rpm the defect lines "
            f"reach {top:.0f} Hz (BPFI {defect.bpfi:.1f} Hz x {settings.race_harmonics} + "
            f"sidebands), but a sample rate of {fs:g} Hz leaves no resonance band above them "
            f"(need fs > {4 * top:.0f} Hz); check --fs and --rpm"
        )


def bank_bands(spectra: Spectra, defect: DefectFrequencies, settings: Settings) -> tuple[Band, ...]:
    """Every band of the filter bank wide enough for the combs' highest line."""
    top = highest_line_hz(bearing_combs(defect, settings), settings.slip_tolerance)
    return filter_bank(spectra.n, spectra.fs, top, settings.max_band_level)


def bearing_screen(
    spectra: Spectra,
    defect: DefectFrequencies,
    settings: Settings,
    bands: tuple[Band, ...] | None = None,
) -> tuple[BearingScreen, EnvelopeBank]:
    """Screen the combs in `bands` (default: the whole bank; the whole band comes first)."""
    specs = bearing_combs(defect, settings)
    tol = settings.slip_tolerance
    full = bank_bands(spectra, defect, settings)
    if bands is None:
        chosen = full
    else:
        # Bands remembered from an earlier analysis, kept while they still fit this spectrum
        # (a lower rate or a faster shaft since); the whole band is always this spectrum's.
        top = highest_line_hz(specs, tol)
        fitting = [
            b for b in bands if b.level and b.hi_hz <= full[0].hi_hz and b.hi_hz - b.lo_hz >= top
        ]
        chosen = tuple(dict.fromkeys([full[0], *fitting]))
    max_bin = reach_bins(specs, defect, tol, spectra.df)
    bank = envelope_bank(spectra, prewhiten(spectra.hann), chosen, max_bin)
    return screen_bearing(bank, defect, specs, tol, settings.report_confidence), bank


def analyse_blocks(
    blocks: FloatArray,
    fs: float,
    *,
    shaft_hz: float | None,
    speed_source: str,
    geometry: BearingGeometry | None,
    group: MachineGroup,
    foundation: Foundation,
    settings: Settings,
    time_signal: FloatArray | None = None,
    bands: tuple[Band, ...] | None = None,
    notes: list[str] | None = None,
) -> Diagnosis:
    """Diagnose a (blocks, n) stack already checked; `bands` limits the envelope bank."""
    spectra = block_spectra(blocks, fs)
    signal = time_signal if time_signal is not None else blocks.reshape(-1)
    return analyse_spectra(
        spectra,
        compute_features(signal, spectra, feature_bands(fs, settings)),
        blocks=int(blocks.shape[0]),
        shaft_hz=shaft_hz,
        speed_source=speed_source,
        geometry=geometry,
        group=group,
        foundation=foundation,
        settings=settings,
        bands=bands,
        notes=notes,
    )


def feature_bands(fs: float, settings: Settings) -> list[tuple[float, float]]:
    return list(settings.bands) if settings.bands is not None else default_bands(fs)


def analyse_spectra(
    spectra: Spectra,
    features: Features,
    *,
    blocks: int,
    shaft_hz: float | None,
    speed_source: str,
    geometry: BearingGeometry | None,
    group: MachineGroup,
    foundation: Foundation,
    settings: Settings,
    bands: tuple[Band, ...] | None = None,
    notes: list[str] | None = None,
) -> Diagnosis:
    """Diagnose from spectra already taken: `spectra.mean_square` (averaged over `blocks`)
    feeds severity and orders, `spectra.hann` (the blocks kept for it) the envelope bank.

    `bands`: the bands to screen; None screens the whole filter bank. The live detector screens
    the whole bank on its first analysis and every `band_refresh_blocks` analyses, and in
    between only the bands each comb scored best in at the last full screening (chosen on
    earlier data, so the correction counts only the bands tried now).
    """
    notes = list(notes or [])
    fs = spectra.fs
    severity = zone_for(features.velocity_rms_mm_s, group, foundation)
    calls: list[FaultCall] = []
    withheld: list[FaultCall] = []
    not_dominant: list[str] = []
    screened: dict[str, float] = {}
    if severity.zone in SEVERITY_CONFIDENCE:
        calls.append(
            FaultCall(
                FaultCode.VIBRATION_SEVERITY.value,
                SEVERITY_CONFIDENCE[severity.zone],
                {"zone": severity.zone.value, **severity.to_dict()},
            )
        )
    orders = None
    defect = None
    band = None
    env_peaks: list[SpectralPeak] = []
    best_bands: dict[FaultCode, Band] = {}
    focus: tuple[Band, ...] = ()
    n_bands = 0
    if shaft_hz is None:
        notes.append("running speed unknown: order and bearing analysis skipped")
    else:
        orders = order_readings(
            spectra, shaft_hz, features.velocity_rms_mm_s, full=severity.zone is not Zone.A
        )
        for name, conf in machine_fault_confidences(orders, severity).items():
            screened[name] = conf
            if conf >= settings.report_confidence:
                calls.append(
                    FaultCall(name, conf, {"zone": severity.zone.value, **orders.to_dict()})
                )
    if geometry is None:
        notes.append("no bearing geometry given: bearing analysis skipped")
    elif shaft_hz is not None:
        defect = geometry.multipliers().at(shaft_hz)
        check_bearing_frequencies(defect, fs, settings)
        screen, bank = bearing_screen(spectra, defect, settings, bands)
        n_bands = len(bank.bands)
        best_bands = screen.best_bands
        focus = tuple(dict.fromkeys([bank.bands[0], *best_bands.values()]))
        shown = bank.row(screen.calls[0].band) if screen.calls else bank.values[0]
        env_peaks = top_peaks(shown, bank.df, 5, min_hz=0.5 * defect.ftf)
        for code, conf in screen.confidences.items():
            screened[code.value] = conf
        for code in screen.untestable:
            line = CARRIER_NAME[code]
            notes.append(
                f"{code.value} not tested: {line} "
                f"{defect.fundamental(code):.1f} Hz +-{100 * settings.slip_tolerance:g} % holds "
                f"no spectral line at this resolution ({bank.df:.2f} Hz); longer blocks would"
            )
        for call in screen.calls:
            band = call.band
            calls.append(FaultCall(call.code.value, call.confidence, call.evidence(defect)))
        withheld = [
            FaultCall(c.code.value, c.confidence, c.evidence(defect)) for c in screen.withheld
        ]
        not_dominant = [c.code.value for c in screen.not_dominant]
    calls.sort(key=lambda c: (c.confidence, -c.evidence.get("log10_p_chance", 0.0)), reverse=True)
    return Diagnosis(
        verdict=calls[0].code if calls else "normal",
        faults=calls,
        features=features,
        iso=severity,
        shaft_hz=shaft_hz,
        speed_source=speed_source,
        bearing=None if geometry is None else geometry.name,
        defect=defect,
        band=band,
        envelope_peaks=env_peaks,
        orders=orders,
        blocks=blocks,
        block_length=spectra.n,
        fs=fs,
        screened=screened,
        bands_screened=n_bands,
        best_bands=best_bands,
        focus_bands=focus,
        withheld=withheld,
        not_dominant=not_dominant,
        notes=notes,
    )


def diagnose(
    signal: FloatArray,
    fs: float,
    *,
    shaft_hz: float | None = None,
    geometry: BearingGeometry | None = None,
    group: MachineGroup = MachineGroup.MEDIUM,
    foundation: Foundation = Foundation.RIGID,
    settings: Settings | None = None,
) -> Diagnosis:
    """Diagnose a whole recording (in g): blocks of ~32 revolutions, 50 % overlap, averaged."""
    settings = settings or Settings()
    signal = np.asarray(signal, dtype=np.float64)
    check_signal(signal, fs)
    notes: list[str] = []
    source = "given"
    if shaft_hz is None:
        probe_n = 2 ** math.floor(math.log2(min(signal.size, int(2 * fs))))
        probe = block_spectra(split_blocks(signal, probe_n, settings.overlap), fs)
        estimate = estimate_shaft_hz(probe, *settings.speed_range_hz)
        if estimate is not None:
            shaft_hz, snr = estimate
            source = "estimated"
            notes.append(
                f"running speed estimated from the spectrum: {shaft_hz * 60:.0f} rpm "
                f"(1x line {snr:.0f} dB above the floor)"
            )
        else:
            source = "unknown"
    elif not math.isfinite(shaft_hz) or shaft_hz <= 0:
        raise BadSignal(f"running speed {shaft_hz * 60} rpm is not a positive number")
    if shaft_hz is not None:
        n = block_length(signal.size, fs, shaft_hz)
    else:
        n = 2 ** math.floor(math.log2(min(signal.size, int(fs))))
    blocks = split_blocks(signal, n, settings.overlap)
    return analyse_blocks(
        blocks,
        fs,
        shaft_hz=shaft_hz,
        speed_source=source,
        geometry=geometry,
        group=group,
        foundation=foundation,
        settings=settings,
        time_signal=signal,
        notes=notes,
    )
