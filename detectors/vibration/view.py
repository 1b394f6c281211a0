"""The read-only view of a `VibrationDetector` that the local site page draws.

The one module that turns the detector's last `Diagnosis` into the plain `SpectrumView` of
gateway/core/spectrum_view.py, so a change of the diagnosis' fields is adapted here only.

The spectra are those of the block given (the latest stored one, or the block that opened a
ticket), computed with the family's own transforms: the Hann-windowed amplitude spectrum of the
block and the squared-envelope spectrum of the band the last diagnosis demodulated (the whole
band, pre-whitened, before a band was chosen). With `average_blocks` > 1 the diagnosis describes
the averaged round, the drawn spectra its newest block.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from detectors.vibration.bearing import DefectFrequencies
from detectors.vibration.bearing_screen import BEARING_CODES, highest_line_hz
from detectors.vibration.checks import check_signal
from detectors.vibration.diagnose import Diagnosis, Settings, bearing_combs
from detectors.vibration.envelope import Band, envelope_bank, prewhiten
from detectors.vibration.errors import BadSignal
from detectors.vibration.spectrum import FloatArray, block_spectra
from detectors.vibration.units import scale_to_g
from gateway.core.records import Quality, Waveform
from gateway.core.spectrum_view import Curve, MarkedLine, MatchedLine, SpectrumView

if TYPE_CHECKING:
    from detectors.vibration.detector import VibrationDetector

# Points drawn per curve: a tablet is about 1000 px wide; more points only cost bytes.
MAX_POINTS = 1200
# Without bearing lines the envelope spectrum is drawn up to this frequency.
DEFAULT_ENVELOPE_TOP_HZ = 500.0
_DEFECT_NAMES = ("BPFO", "BPFI", "BSF", "FTF")


def spectrum_view(detector: VibrationDetector, waveform: Waveform) -> SpectrumView | None:
    """The view of one block of the detector's tag; None for another tag or a BAD block, or a
    block the family itself refuses (flat, clipped, too short, unknown unit)."""
    if waveform.tag != detector.tag_id or waveform.quality is Quality.BAD:
        return None
    try:
        data = np.asarray(waveform.data, dtype=np.float64) * scale_to_g(waveform.unit)
        fs = float(waveform.sample_rate)
        check_signal(data, fs)
    except BadSignal:
        return None
    block = data[: data.size - data.size % 2]
    diagnosis = detector.last_diagnosis
    settings = detector.settings
    spectra = block_spectra(block[np.newaxis, :], fs)
    spectrum = _reduce("acceleration spectrum", "g", spectra.df, spectra.amplitude)
    defect = diagnosis.defect if diagnosis is not None else None
    band = demodulated_band(diagnosis) if diagnosis is not None else None
    chosen = band if band is not None else Band(spectra.df, fs / 2, 0)
    top_hz = (
        1.1 * highest_line_hz(bearing_combs(defect, settings), settings.slip_tolerance)
        if defect is not None
        else DEFAULT_ENVELOPE_TOP_HZ
    )
    top_hz = min(top_hz, chosen.hi_hz - chosen.lo_hz)
    max_bin = max(2, int(top_hz / spectra.df))
    bank = envelope_bank(spectra, prewhiten(spectra.hann), (chosen,), max_bin)
    # The family's envelope spectra are modulation depths (relative to the mean envelope).
    envelope = _reduce("envelope spectrum", "depth", bank.df, bank.row(chosen))
    baseline = detector.baseline
    return SpectrumView(
        tag=detector.tag_id,
        asset=detector.asset,
        ts=waveform.ts,
        spectrum=spectrum,
        envelope=envelope,
        band_hz=(round(max(chosen.lo_hz, 0.0), 1), round(min(chosen.hi_hz, fs / 2), 1)),
        shaft_hz=diagnosis.shaft_hz if diagnosis is not None else None,
        speed_source=diagnosis.speed_source if diagnosis is not None else "unknown",
        bearing=diagnosis.bearing if diagnosis is not None else None,
        lines=defect_lines(defect, settings) if defect is not None else (),
        matched=matched_lines(diagnosis) if diagnosis is not None else (),
        verdict=diagnosis.verdict if diagnosis is not None else "not analysed yet",
        faults=(
            tuple((f.code, round(f.confidence, 3)) for f in diagnosis.faults)
            if diagnosis is not None
            else ()
        ),
        zone=diagnosis.iso.zone.value if diagnosis is not None else None,
        velocity_rms_mm_s=diagnosis.iso.velocity_rms_mm_s if diagnosis is not None else None,
        zone_boundaries_mm_s=diagnosis.iso.boundaries_mm_s if diagnosis is not None else (),
        features=(
            {k: float(v) for k, v in diagnosis.features.to_dict().items()}
            if diagnosis is not None
            else {}
        ),
        baseline=(
            {name: (s["mean"], s["std"]) for name, s in baseline.reference().items()}
            if baseline.learned
            else {}
        ),
        notes=tuple(diagnosis.notes) if diagnosis is not None else (),
    )


def demodulated_band(diagnosis: Diagnosis) -> Band | None:
    """The band of the filter bank whose envelope spectrum a bearing fault was matched in
    (each call names its band), else the band the diagnosis chose."""
    for call in diagnosis.faults:
        edges = call.evidence.get("band_hz") if call.code in BEARING_CODES else None
        if isinstance(edges, list | tuple) and len(edges) == 2:
            return Band(float(edges[0]), float(edges[1]), -1)
    return diagnosis.band


def defect_lines(defect: DefectFrequencies, settings: Settings) -> tuple[MarkedLine, ...]:
    """BPFO, BPFI, BSF and FTF with the harmonics the family's combs look at, and 1x shaft."""
    counts = {
        "BPFO": settings.race_harmonics,
        "BPFI": settings.race_harmonics,
        "BSF": settings.ball_harmonics,
        "FTF": settings.cage_harmonics,
    }
    fundamentals = dict(zip(_DEFECT_NAMES, (defect.bpfo, defect.bpfi, defect.bsf, defect.ftf),
                            strict=True))  # fmt: skip
    lines = [
        MarkedLine(name, h, round(h * fundamentals[name], 3))
        for name in _DEFECT_NAMES
        for h in range(1, counts[name] + 1)
    ]
    lines.append(MarkedLine("shaft", 1, round(defect.shaft, 3)))
    return tuple(lines)


def matched_lines(diagnosis: Diagnosis) -> tuple[MatchedLine, ...]:
    """The envelope lines of each bearing fault the diagnosis reports (its evidence)."""
    out: list[MatchedLine] = []
    for call in diagnosis.faults:
        if call.code not in BEARING_CODES:
            continue
        evidence = call.evidence
        for line in [*evidence.get("harmonic_lines", ()), *evidence.get("sideband_lines", ())]:
            if not line.get("significant", True):
                continue
            out.append(
                MatchedLine(
                    fault=call.code,
                    label=str(line.get("line", "")),
                    freq_hz=float(line["freq_hz"]),
                    snr_db=float(line.get("level_db", 0.0)),
                )
            )
    return tuple(out)


def _reduce(label: str, unit: str, df: float, values: FloatArray) -> Curve:
    """At most `MAX_POINTS` points: each the largest of a group of bins, so a line keeps its
    height at any zoom."""
    group = max(1, math.ceil(values.size / MAX_POINTS))
    usable = values.size - values.size % group
    reduced = values[:usable].reshape(-1, group).max(axis=1) if group > 1 else values
    finite = np.where(np.isfinite(reduced), reduced, 0.0)
    return Curve(label, unit, df * group, tuple(float(f"{v:.5g}") for v in finite))
