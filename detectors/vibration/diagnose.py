"""One diagnosis from everything the family measures: features, ISO zone, orders, bearing combs.

The same `Settings` apply to every machine and every record; nothing is tuned per file.
Confidence of a bearing fault is the statistical surprise of its comb (see `matching.py`): the
chance probability p of the comb under noise, mapped to 0 at p = 1e-2 and 0.5 at p = 1e-4,
each further factor of 100 halving the remaining doubt; a fault is reported from confidence 0.5
(p <= 1e-4 after correcting for every candidate, band and method tried). Ties near 1 are broken
by the surprise itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from detectors.vibration.bearing import BearingGeometry, DefectFrequencies
from detectors.vibration.checks import block_length, check_signal, split_blocks
from detectors.vibration.envelope import (
    Band,
    EnvelopeSpectrum,
    envelope_spectrum,
    kurtogram,
    prewhiten,
)
from detectors.vibration.errors import BadSignal
from detectors.vibration.features import Features, compute_features
from detectors.vibration.iso20816 import Foundation, MachineGroup, Severity, Zone, zone_for
from detectors.vibration.matching import (
    CombMatch,
    CombSpec,
    CombTable,
    NormalisedSpectrum,
    match_combs,
)
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

BEARING_CODES = (
    FaultCode.BEARING_OUTER_RACE,
    FaultCode.BEARING_INNER_RACE,
    FaultCode.BEARING_ROLLING_ELEMENT,
    FaultCode.BEARING_CAGE,
)
SEVERITY_CONFIDENCE = {Zone.C: 0.7, Zone.D: 0.95}


@dataclass(frozen=True, slots=True)
class Settings:
    """Physically motivated parameters, identical for every record."""

    slip_tolerance: float = 0.03  # real bearings slip 1-2 %; hand-read speeds add ~1 %
    race_harmonics: int = 3
    ball_harmonics: int = 4  # BSF, 2xBSF (both races struck), 3x, 4x
    cage_harmonics: int = 3
    max_kurtogram_level: int = 4
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
    band: Band | None
    envelope_peaks: list[SpectralPeak]
    orders: OrderReadings | None
    blocks: int
    block_length: int
    fs: float
    screened: dict[str, float] = field(default_factory=dict)  # every comb's confidence
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
            "envelope_peaks": [p.to_dict("g2") for p in self.envelope_peaks],
            "orders": None if self.orders is None else self.orders.to_dict(),
            "screened": {k: round(v, 3) for k, v in self.screened.items()},
            "analysis": {
                "fs_hz": self.fs,
                "blocks": self.blocks,
                "block_length": self.block_length,
            },
            "notes": list(self.notes),
        }


def comb_specs(defect: DefectFrequencies, settings: Settings) -> dict[FaultCode, CombSpec]:
    return {
        FaultCode.BEARING_OUTER_RACE: CombSpec(defect.bpfo, settings.race_harmonics),
        # Inner race: the defect turns with the shaft through the load zone -> +-fr sidebands.
        FaultCode.BEARING_INNER_RACE: CombSpec(defect.bpfi, settings.race_harmonics, defect.shaft),
        # Ball: the ball is carried by the cage through the load zone -> +-FTF sidebands.
        FaultCode.BEARING_ROLLING_ELEMENT: CombSpec(
            defect.bsf, settings.ball_harmonics, defect.ftf
        ),
        FaultCode.BEARING_CAGE: CombSpec(defect.ftf, settings.cage_harmonics),
    }


def highest_line_hz(defect: DefectFrequencies, settings: Settings) -> float:
    """The highest envelope line any comb looks at (plus its tolerance)."""
    specs = comb_specs(defect, settings).values()
    top = max(s.harmonics * s.fundamental_hz + (s.sideband_hz or 0.0) for s in specs)
    return top * (1 + settings.slip_tolerance)


def check_bearing_frequencies(defect: DefectFrequencies, fs: float, settings: Settings) -> None:
    """Envelope analysis needs a carrier band above the defect lines: they must sit below fs/4."""
    top = highest_line_hz(defect, settings)
    if top >= fs / 4:
        raise BadSignal(
            f"bearing frequencies out of reach: at {defect.shaft * 60:.0f} rpm the defect lines "
            f"reach {top:.0f} Hz (BPFI {defect.bpfi:.1f} Hz x {settings.race_harmonics} + "
            f"sidebands), but a sample rate of {fs:g} Hz leaves no resonance band above them "
            f"(need fs > {4 * top:.0f} Hz); check --fs and --rpm"
        )


def confidence_from_log10_p(log10_p: float) -> float:
    """0 at p = 1e-2, 0.5 at p = 1e-4, each further factor 100 halves the doubt."""
    surprise = -log10_p
    return 0.0 if surprise <= 2.0 else float(1.0 - 2.0 ** (-(surprise - 2.0) / 2.0))


@dataclass(frozen=True, slots=True)
class EnvelopeResult:
    spectra: list[EnvelopeSpectrum]
    band: Band


def envelope_spectra(
    spectra: Spectra, defect: DefectFrequencies, settings: Settings, band: Band | None = None
) -> EnvelopeResult:
    """Whitened whole-band SES and the SES of the spectral-kurtosis band (or of `band`)."""
    whitened = prewhiten(spectra.hann)
    if band is None:
        min_width = highest_line_hz(defect, settings)
        band = kurtogram(spectra, whitened, min_width, settings.max_kurtogram_level)[0]
    full = Band(spectra.df, spectra.fs / 2, 0, band.kurtosis if band.level == 0 else math.nan)
    # The whole-band spectrum is only shown (top peaks) when the kurtogram picked the whole
    # band; otherwise only the bins the combs and their floor can read are computed.
    max_bin = None if band.level == 0 else comb_max_bin(defect, settings, spectra.df)
    out = [envelope_spectrum(spectra, whitened, full, "whitened_full_band", max_bin)]
    if band.level != 0:
        out.append(envelope_spectrum(spectra, whitened, band, "whitened_sk_band"))
    return EnvelopeResult(spectra=out, band=band)


def family_lines(
    code: FaultCode, match: CombMatch, defect: DefectFrequencies, top_hz: float
) -> list[float]:
    """Lines a confirmed fault explains: its harmonics (as found, and as multiples of the found
    fundamental) and their +-1, +-2 x shaft (and, for a ball, +-FTF) sidebands. Another comb
    landing on them is not independent evidence."""
    found_hz = match.found_hz
    spacings = [defect.shaft]
    if code is FaultCode.BEARING_ROLLING_ELEMENT:
        spacings.append(defect.ftf)
    if code is FaultCode.BEARING_CAGE:
        spacings = []
    centres = [h * found_hz for h in range(1, int(top_hz / found_hz) + 2)]
    centres += [line.freq_hz for line in match.lines if line.label.endswith("x")]
    out: list[float] = []
    for c in centres:
        out.append(c)
        for s in spacings:
            out.extend(c + m * s for m in (-2, -1, 1, 2))
    return out


def _strength(match: CombMatch | None) -> float:
    return -match.log10_p if match is not None else 0.0


Screen = dict[FaultCode, tuple[float, CombMatch | None, EnvelopeSpectrum | None]]


def floor_half_width(defect: DefectFrequencies, df: float) -> int:
    """Half-width (bins) of the running median that is an envelope line's noise floor."""
    return max(10, round(defect.shaft / df))


def comb_max_bin(defect: DefectFrequencies, settings: Settings, df: float) -> int:
    """Highest envelope bin the comb statistics read: top line plus the floor's reach."""
    return int(highest_line_hz(defect, settings) / df) + 2 * floor_half_width(defect, df) + 4


def screen_bearing(
    envelopes: list[EnvelopeSpectrum],
    defect: DefectFrequencies,
    settings: Settings,
    chance_blocks: int = 1,
) -> Screen:
    """Best comb per bearing fault over the envelope spectra: (confidence, match, spectrum).

    Faults are accepted strongest first; the lines an accepted fault explains are then taken
    out of the other combs ("explaining away"), so the +-fr sidebands of an outer-race line do
    not pass for an inner-race comb. `chance_blocks`: see `analyse_spectra`.
    """
    specs = comb_specs(defect, settings)
    top = highest_line_hz(defect, settings)
    df = envelopes[0].df
    floor_half = floor_half_width(defect, df)
    exclude = [k * defect.shaft for k in range(1, int(top / defect.shaft) + 2)]
    # Offline, the chance law is that of a single block even when blocks are averaged: a
    # long average uncovers weak but real lines (electrical, structural) that are no defect;
    # only lines standing ~10 dB above the floor count, whatever the record length.
    norms = [NormalisedSpectrum(ses, floor_half, chance_blocks, top) for ses in envelopes]
    trials = math.log10(len(envelopes))
    if not any(norm.any_line_can_be_significant() for norm in norms):
        # Exact shortcut: every comb needs two significant lines and no bin could make one.
        return {code: (0.0, None, None) for code in specs}

    def best_for(codes: list[FaultCode]) -> Screen:
        best: Screen = {code: (0.0, None, None) for code in codes}
        chosen = [specs[c] for c in codes]
        table: CombTable | None = None
        for ses, norm in zip(envelopes, norms, strict=True):
            # All open combs of one spectrum in one vectorised pass (the same statistics as
            # one by one); spectra of the same reach share where the comb lines fall.
            if table is None or not table.fits(norm):
                table = CombTable.build(
                    norm.df, norm.size, norm.top_hz, chosen, settings.slip_tolerance, exclude
                )
            matches = match_combs(norm, chosen, settings.slip_tolerance, exclude, table)
            for code, match in zip(codes, matches, strict=True):
                spec = specs[code]
                # Below shaft speed, envelope spectra carry belt and slip lines: ask for a
                # third line.
                needed = 3 if spec.fundamental_hz < defect.shaft else 2
                if match is None or match.significant_count < needed:
                    continue
                match = replace(match, log10_p=min(0.0, match.log10_p + trials))
                conf = confidence_from_log10_p(match.log10_p)
                held = best[code]
                if conf > held[0] or (held[1] is not None and match.log10_p < held[1].log10_p):
                    best[code] = (conf, match, ses)
        return best

    result: Screen = best_for(list(specs))
    open_codes = set(specs)
    while open_codes:
        code = max(open_codes, key=lambda c: _strength(result[c][1]))
        conf, match, _ = result[code]
        if conf < settings.report_confidence or match is None:
            break
        open_codes.discard(code)
        exclude = exclude + family_lines(code, match, defect, top)
        result.update(best_for([c for c in specs if c in open_codes]))
    return result


def bearing_evidence(
    code: FaultCode, match: CombMatch, ses: EnvelopeSpectrum, defect: DefectFrequencies
) -> dict[str, Any]:
    lines = match.significant_lines
    harmonics = sorted({ln.label.split("x")[0] for ln in lines if ln.label.endswith("x")})
    strongest = max(lines, key=lambda ln: ln.snr_db)
    return {
        "defect_line": {
            FaultCode.BEARING_OUTER_RACE: "BPFO",
            FaultCode.BEARING_INNER_RACE: "BPFI",
            FaultCode.BEARING_ROLLING_ELEMENT: "BSF",
            FaultCode.BEARING_CAGE: "FTF",
        }[code],
        "expected_hz": round(match.expected_hz, 2),
        "matched_hz": round(match.found_hz, 2),
        "deviation_pct": round(match.deviation_pct, 2),
        "harmonics": [int(h) for h in harmonics],
        "sidebands": sum(1 for ln in lines if ln.label.endswith("sb")),
        "snr_db": round(strongest.snr_db, 1),
        "lines": [ln.to_dict() for ln in lines],
        "log10_p_chance": round(match.log10_p, 1),
        "method": ses.method,
        "band_hz": [round(ses.band.lo_hz, 1), round(ses.band.hi_hz, 1)],
        "shaft_hz": round(defect.shaft, 3),
    }


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
    band: Band | None = None,
    notes: list[str] | None = None,
) -> Diagnosis:
    """Diagnose a (blocks, n) stack already checked; `band` skips the kurtogram when given."""
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
        band=band,
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
    band: Band | None = None,
    notes: list[str] | None = None,
    chance_blocks: int = 1,
) -> Diagnosis:
    """Diagnose from spectra already taken: `spectra.mean_square` (averaged over `blocks`)
    feeds severity and orders, `spectra.hann` the envelope; `band` skips the kurtogram.

    `chance_blocks` is the number of independent blocks whose envelope spectra the comb
    statistics may credit (Gamma(B, 1/B) law of matching.py). Offline records keep 1 however
    many blocks they average (see `screen_bearing`); the live detector's averaging round passes
    its few widely spaced envelope blocks (at most a handful, seconds apart), where the exact
    law holds and the lines still have to stand ~7 dB (2 blocks) above the floor.
    """
    notes = list(notes or [])
    fs = spectra.fs
    severity = zone_for(features.velocity_rms_mm_s, group, foundation)
    calls: list[FaultCall] = []
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
    chosen_band = None
    env_peaks: list[SpectralPeak] = []
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
        env = envelope_spectra(spectra, defect, settings, band)
        chosen_band = env.band
        shown = env.spectra[-1]
        env_peaks = top_peaks(shown.values, shown.df, 5, min_hz=0.5 * defect.ftf)
        for code, (conf, match, ses) in screen_bearing(
            env.spectra, defect, settings, chance_blocks
        ).items():
            screened[code.value] = conf
            if match is not None and ses is not None and conf >= settings.report_confidence:
                calls.append(
                    FaultCall(code.value, conf, bearing_evidence(code, match, ses, defect))
                )
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
        band=chosen_band,
        envelope_peaks=env_peaks,
        orders=orders,
        blocks=blocks,
        block_length=spectra.n,
        fs=fs,
        screened=screened,
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
