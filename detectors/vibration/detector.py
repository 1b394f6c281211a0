"""`VibrationDetector`: the vibration family on live `Waveform` blocks.

Synchronous and pure (DESIGN.md section 5): no I/O, state in memory, `snapshot`/`restore` for
persistence. Evidence is a summary (features, zone, top envelope lines, matched defect
frequencies), never the waveform.

Every block is checked (NaN, flat, clipped, too short) and transformed once; its power spectrum
and time statistics are added to an averaging round of `average_blocks` blocks (rounds.py).
When a round is complete it is diagnosed: ISO severity, band energies and order readings from
the averaged spectrum, the envelope bank averaged over the round's envelope blocks (its newest
block and every `ENVELOPE_EVERY_BLOCKS`-th before it), the bearing combs, baseline and
confirmation. A fault must
be seen in `confirm_blocks` consecutive analyses before an active finding is raised, and
missing for as many before it is cleared, so one noisy analysis neither opens nor closes a
ticket. With `average_blocks = 1` (the default) every block is one analysis. Confirmation
counts analyses of separate data: an analysis whose samples overlap those of the last one
counted (blocks sent with 50 % overlap, say) is not a second look at the machine, so it keeps
a streak alive but does not add to it.

A block holding fewer than `MIN_REVOLUTIONS_PER_BLOCK` revolutions at a known speed cannot
resolve the shaft-rate sidebands; contiguous blocks of the tag are then assembled (window.py,
by their timestamps) into the window `analyze` uses, 32-64 revolutions, which takes the
block's place in the round. Without a known speed no window length can be chosen: such blocks
are refused as before once the speed estimated from them says they are too short.

The envelope bank (diagnose.py, bearing_screen.py) is screened whole on the first analysis and
again every `band_refresh_blocks` analyses; the bands each comb scored best in are a property
of the machine's structure, not of one block, so the analyses in between screen only those
(and the whole band). Both are the same decision as `analyze`'s, with the correction for the
bands tried in each.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.vibration import readout
from detectors.vibration.baseline import Baseline
from detectors.vibration.bearing import BearingGeometry
from detectors.vibration.checks import MIN_REVOLUTIONS_PER_BLOCK, check_signal
from detectors.vibration.diagnose import (
    Diagnosis,
    FaultCall,
    Settings,
    analyse_spectra,
    feature_bands,
)
from detectors.vibration.envelope import Band
from detectors.vibration.errors import BadSignal
from detectors.vibration.features import spectral_features
from detectors.vibration.iso20816 import Foundation, MachineGroup, Zone
from detectors.vibration.rounds import AveragingRound
from detectors.vibration.speed import estimate_shaft_hz
from detectors.vibration.units import scale_to_g
from detectors.vibration.view import spectrum_view
from detectors.vibration.window import WindowAssembler, window_length
from gateway.core.interfaces import Record, ResumedCondition
from gateway.core.records import (
    DerivedTag,
    FaultCode,
    Finding,
    Priority,
    Quality,
    Sample,
    Waveform,
)
from gateway.core.spectrum_view import SpectrumView

log = logging.getLogger(__name__)

# In an averaging round, one block in this many is also demodulated for the envelope spectra
# (averaged over those blocks). An envelope costs about four block rFFTs (a complex inverse FFT
# of the band and an rFFT of the squared envelope, for the whole band and the spectral-kurtosis
# band): one in 32 keeps it near a tenth of the per-block work (bench/vibration/README.md).
ENVELOPE_EVERY_BLOCKS = 32
# Summary features published as samples after each analysis (telemetry, verification), with
# their unit and the least rise that fails verification after a repair: ISO 20816 velocity
# zone boundaries are 0.7 mm/s apart at the low end; acceleration and the shape factors (crest
# factor ~3, kurtosis 3 for a healthy machine) scatter by about these amounts between blocks.
FEATURE_UNITS_AND_FLOORS: dict[str, tuple[str, float]] = {
    "velocity_rms_mm_s": ("mm/s", 0.3),
    "accel_rms_g": ("g", 0.02),
    "accel_peak_g": ("g", 0.1),
    "crest_factor": ("", 0.3),
    "kurtosis": ("", 0.5),
}
SAMPLE_FEATURES = tuple(FEATURE_UNITS_AND_FLOORS)
# Timestamps of polled blocks jitter: an analysis starting this fraction of a block before the
# end of the last one counted is still taken as separate data.
OVERLAP_SLACK = 0.05


@dataclass
class _Track:
    """Confirmation state of one fault code: streaks of analyses of separate data."""

    seen: int = 0
    missing: int = 0
    active: bool = False
    counted_until: float = -math.inf  # end of the data of the last analysis counted


@dataclass(frozen=True, slots=True)
class _Span:
    """Time the samples of one analysis cover."""

    start: float
    end: float
    block_s: float


class VibrationDetector:
    def __init__(
        self,
        *,
        asset: str,
        tag_id: str,
        geometry: BearingGeometry | None = None,
        machine_group: MachineGroup | int = MachineGroup.MEDIUM,
        foundation: Foundation | str = Foundation.RIGID,
        rpm_tag: str | None = None,
        fixed_rpm: float | None = None,
        confirm_blocks: int = 3,
        baseline_blocks: int = 20,
        band_refresh_blocks: int = 16,
        average_blocks: int = 1,
        settings: Settings | None = None,
        name: str = "vibration",
    ) -> None:
        if confirm_blocks < 1:
            raise ValueError(f"confirm_blocks must be at least 1, got {confirm_blocks}")
        if average_blocks < 1:
            raise ValueError(f"average_blocks must be at least 1, got {average_blocks}")
        if fixed_rpm is not None and not fixed_rpm > 0:
            raise ValueError(f"fixed_rpm must be positive, got {fixed_rpm}")
        self.asset = asset
        self.tag_id = tag_id
        self.geometry = geometry
        self.group = MachineGroup(machine_group)
        self.foundation = Foundation(foundation)
        self.rpm_tag = rpm_tag
        self.fixed_rpm = fixed_rpm
        self.confirm_blocks = confirm_blocks
        self.band_refresh_blocks = max(1, band_refresh_blocks)
        self.average_blocks = average_blocks
        self.settings = settings or Settings()
        self._name = name
        self._rpm_from_tag: float | None = None
        self._bands: tuple[Band, ...] | None = None  # None: screen the whole bank next time
        self._analyses_since_bank = 0
        self._tracks: dict[str, _Track] = {}
        self._problem: str | None = None
        self._round = AveragingRound()
        self._round_source = "unknown"
        self._round_first_ts = 0.0
        self._round_end_ts = 0.0
        self._last_span = _Span(0.0, 0.0, 0.0)
        self._window = WindowAssembler()
        self._feature_samples: list[Sample] = []
        self.baseline = Baseline(blocks=baseline_blocks)
        self.last_diagnosis: Diagnosis | None = None

    # -- Detector protocol ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def inputs(self) -> frozenset[str]:
        return frozenset({self.tag_id} | ({self.rpm_tag} if self.rpm_tag else set()))

    @property
    def derived_tags(self) -> tuple[DerivedTag, ...]:
        """`<waveform tag>.<feature>` for every feature of `SAMPLE_FEATURES`."""
        return tuple(
            DerivedTag(f"{self.tag_id}.{feature}", unit, floor)
            for feature, (unit, floor) in FEATURE_UNITS_AND_FLOORS.items()
        )

    def update(self, record: Record) -> list[Finding]:
        if isinstance(record, Sample):
            if record.tag == self.rpm_tag and record.quality is not Quality.BAD:
                value = record.value
                self._rpm_from_tag = value if value is not None and value > 0 else None
            return []
        if record.tag != self.tag_id or record.quality is Quality.BAD:
            return []
        try:
            diagnosis = self._add_block(record)
        except BadSignal as exc:
            self._window.reset()  # a window never spans a refused block
            self._note_problem(str(exc))
            return []
        self._note_problem(self._window.interruption)
        if diagnosis is None:  # the window or the averaging round is not complete yet
            return []
        self.last_diagnosis = diagnosis
        self._feature_samples = self._samples(diagnosis, record.ts)
        return self._confirm(diagnosis, record.ts, self._last_span)

    @property
    def window_length(self) -> int | None:
        """Samples of the analysis window the blocks are being assembled into (window.py);
        None while each block is analysed on its own."""
        return self._window.n or None

    @property
    def last_span(self) -> tuple[float, float]:
        """Timestamps of the first sample of the last analysis and just past its last one."""
        return self._last_span.start, self._last_span.end

    @property
    def problem(self) -> str | None:
        """Why the last block was not diagnosed (None when it was)."""
        return self._problem

    def feature_samples(self) -> list[Sample]:
        """Samples of the last analysed block's summary features, then forgets them
        (empty when no block was analysed since the last call).

        Tag ids are `<tag_id>.<feature>` for the features of `SAMPLE_FEATURES`, stamped with
        the analysed waveform's ts; with `average_blocks` > 1 they describe the whole round."""
        out, self._feature_samples = self._feature_samples, []
        return out

    def spectrum_view(self, waveform: Waveform) -> SpectrumView | None:
        """What the local site page draws of `waveform` (see detectors/vibration/view.py)."""
        return spectrum_view(self, waveform)

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.snapshot(),
            "active": sorted(code for code, t in self._tracks.items() if t.active),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.baseline = Baseline.restore(state["baseline"])
        self._tracks = {code: _Track(active=True) for code in state.get("active", [])}

    def resume(self, conditions: Sequence[ResumedCondition]) -> None:
        """Faults state.db holds active resume as confirmed: they clear after
        `confirm_blocks` analyses without them, and are not confirmed (raised) again."""
        for condition in conditions:
            if condition.detector == self.name:
                self._tracks.setdefault(str(condition.fault_code), _Track()).active = True

    # -- internals --------------------------------------------------------------------------

    def _known_shaft_hz(self, wf: Waveform) -> tuple[float | None, str]:
        if wf.running_speed_hz is not None and wf.running_speed_hz > 0:
            return wf.running_speed_hz, "waveform"
        if self._rpm_from_tag is not None:
            return self._rpm_from_tag / 60.0, "tag"
        if self.fixed_rpm is not None:
            return self.fixed_rpm / 60.0, "fixed"
        return None, "unknown"

    def _add_block(self, wf: Waveform) -> Diagnosis | None:
        """Check and accumulate one block (or the window it completes); diagnose the round
        when it is complete."""
        scale = scale_to_g(wf.unit)
        data = np.asarray(wf.data, dtype=np.float64)
        if scale != 1.0:
            data = data * scale
        fs = float(wf.sample_rate)
        lo, hi = check_signal(data, fs)
        shaft, source = self._known_shaft_hz(wf)
        start = wf.ts
        if shaft is not None and data.size * shaft / fs < MIN_REVOLUTIONS_PER_BLOCK:
            # Too few revolutions to resolve the shaft-rate sidebands: gather contiguous
            # blocks into the window analyze would use (window.py).
            n = window_length(fs, shaft, self._window.n, self.settings.slip_tolerance)
            windows = self._window.add(wf.ts, data, fs, n)
            if not windows:
                return None
            window = windows[-1]  # blocks are shorter than the hop: at most one per block
            block, start = window.samples, window.start
            lo, hi = float(block.min()), float(block.max())
        else:
            self._window.reset()
            self._window.interruption = None
            block = data[: data.size - data.size % 2]
            if block.size != data.size:  # the dropped odd sample may have held an extreme
                lo, hi = float(block.min()), float(block.max())
        self._round.restart_if_changed(block.size, fs)
        if self._round.count == 0:
            self._round_first_ts = start
        keep = self._keeps_envelope(self._round.count)
        self._round.add(block, fs, shaft, lo, hi, keep_spectrum=keep)
        self._round_end_ts = start + block.size / fs
        if shaft is not None:
            self._round_source = source
        if self._round.count < self.average_blocks:
            return None
        self._last_span = _Span(self._round_first_ts, self._round_end_ts, block.size / fs)
        try:
            return self._diagnose_round()
        finally:
            self._round.reset()
            self._round_source = "unknown"

    def _keeps_envelope(self, position: int) -> bool:
        """Whether the block at `position` of the round is demodulated for the envelope: the
        round's last block and every `ENVELOPE_EVERY_BLOCKS`-th block before it."""
        stride = min(self.average_blocks, ENVELOPE_EVERY_BLOCKS)
        return (self.average_blocks - 1 - position) % stride == 0

    @staticmethod
    def _check_revolutions(n: int, fs: float, shaft: float) -> None:
        if n * shaft / fs < MIN_REVOLUTIONS_PER_BLOCK:
            raise BadSignal(
                f"block of {n} samples at {fs:g} Hz holds fewer than "
                f"{MIN_REVOLUTIONS_PER_BLOCK} revolutions at {shaft * 60:.0f} rpm"
            )

    def _diagnose_round(self) -> Diagnosis:
        spectra = self._round.spectra()
        fs = spectra.fs
        shaft, source = self._round.shaft_hz, self._round_source
        if shaft is None:
            # No speed came with the blocks: estimate it from the round's averaged spectrum.
            estimate = estimate_shaft_hz(spectra, *self.settings.speed_range_hz)
            shaft, source = (estimate[0], "estimated") if estimate else (None, "unknown")
            if shaft is not None:
                self._check_revolutions(spectra.n, fs, shaft)
        features = spectral_features(
            self._round.time_stats(), spectra, feature_bands(fs, self.settings)
        )
        refresh = self._bands is None or self._analyses_since_bank >= self.band_refresh_blocks
        envelope_blocks = int(spectra.hann.shape[0])
        notes = []
        if self._round.count > 1:
            notes.append(
                f"spectra averaged over {self._round.count} blocks, envelope spectra over "
                f"{envelope_blocks} of them"
            )
        diagnosis = analyse_spectra(
            spectra,
            features,
            blocks=self._round.count,
            shaft_hz=shaft,
            speed_source=source,
            geometry=self.geometry,
            group=self.group,
            foundation=self.foundation,
            settings=self.settings,
            bands=None if refresh else self._bands,
            notes=notes,
        )
        if refresh and diagnosis.focus_bands:
            self._bands = diagnosis.focus_bands
            self._analyses_since_bank = 1
        elif diagnosis.focus_bands:
            self._analyses_since_bank += 1
        return diagnosis

    def _samples(self, d: Diagnosis, ts: float) -> list[Sample]:
        return [
            Sample(f"{self.tag_id}.{name}", ts, float(getattr(d.features, name)), Quality.GOOD)
            for name in SAMPLE_FEATURES
        ]

    def _note_problem(self, problem: str | None) -> None:
        if problem == self._problem:
            return
        if problem is None:
            log.info("Vibration tag `%s` of `%s` diagnosable again.", self.tag_id, self.asset)
        else:
            log.warning(
                "Vibration tag `%s` of `%s` not diagnosed: %s", self.tag_id, self.asset, problem
            )
        self._problem = problem

    def _confirm(self, d: Diagnosis, ts: float, span: _Span) -> list[Finding]:
        features = d.features.to_dict()
        if not d.faults:
            was_learned = self.baseline.learned
            self.baseline.learn(features)
            if self.baseline.learned and not was_learned:
                log.info(
                    "Vibration baseline of `%s` learned from %d blocks.",
                    self.asset,
                    self.baseline.count,
                )
        deviation = self.baseline.deviation(features)
        seen = {f.code: f for f in d.faults}
        out: list[Finding] = []
        for code in sorted(set(seen) | set(self._tracks)):
            track = self._tracks.setdefault(code, _Track())
            # An analysis overlapping the last one counted repeats part of its samples: it
            # keeps the streak, it does not lengthen it.
            fresh = span.start >= track.counted_until - OVERLAP_SLACK * span.block_s
            if code in seen:
                if track.missing:
                    track.missing, track.counted_until = 0, -math.inf
                    fresh = True
                if fresh:
                    track.seen += 1
                    track.counted_until = span.end
                if fresh and not track.active and track.seen >= self.confirm_blocks:
                    track.active = True
                    log.info(
                        "Vibration fault `%s` on `%s` confirmed over %d analyses.",
                        code,
                        self.asset,
                        track.seen,
                    )
                    out.append(self._finding(seen[code], d, ts, deviation, active=True))
            else:
                if track.seen:
                    track.seen, track.counted_until = 0, -math.inf
                    fresh = True
                if track.active and fresh:
                    track.missing += 1
                    track.counted_until = span.end
                    if track.missing >= self.confirm_blocks:
                        track.active = False
                        track.missing = 0
                        log.info("Vibration fault `%s` on `%s` cleared.", code, self.asset)
                        out.append(self._cleared(code, d, ts, deviation))
        return out

    def _severity(self, code: str, zone: Zone) -> Priority:
        if code == FaultCode.VIBRATION_SEVERITY:
            return Priority.P1 if zone is Zone.D else Priority.P2
        return Priority.P1 if zone.rank >= Zone.C.rank else Priority.P2

    def _small_features(self, d: Diagnosis, deviation: float | None) -> dict[str, float]:
        f = d.features
        out = {
            "velocity_rms_mm_s": round(f.velocity_rms_mm_s, 4),
            "accel_rms_g": round(f.accel_rms_g, 5),
            "crest_factor": round(f.crest_factor, 3),
            "kurtosis": round(f.kurtosis, 3),
        }
        if d.shaft_hz is not None:
            out["shaft_hz"] = round(d.shaft_hz, 3)
        if deviation is not None:
            out["baseline_deviation"] = round(deviation, 2)
        return out

    def _evidence(self, call: FaultCall | None, d: Diagnosis) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "zone": d.iso.zone.value,
            "velocity_rms_mm_s": round(d.iso.velocity_rms_mm_s, 4),
            "features": d.features.to_dict(),
            "top_peaks": [
                {"freq_hz": round(p.freq_hz, 2), "level_db": round(p.snr_db, 1)}
                for p in d.envelope_peaks
            ],
            "speed_source": d.speed_source,
            "unit": "mm/s",  # of the finding's value: the overall velocity RMS
        }
        if d.shaft_hz is not None:
            ev["speed_rpm"] = round(d.shaft_hz * 60, 1)
        if d.defect is not None:
            ev["defect_frequencies"] = d.defect.to_dict()
            ev["bearing"] = d.bearing
        if call is not None:
            ev["matched"] = call.evidence
            ev["readout"] = readout.readout(call, d)
        return ev

    def _finding(
        self, call: FaultCall, d: Diagnosis, ts: float, deviation: float | None, *, active: bool
    ) -> Finding:
        features = self._small_features(d, deviation)
        features["confidence"] = round(call.confidence, 3)
        return Finding(
            asset=self.asset,
            fault_code=FaultCode(call.code),
            severity=self._severity(call.code, d.iso.zone),
            score=call.confidence,
            detector=self.name,
            message=readout.message(call, d, self.asset),
            ts=ts,
            active=active,
            features=features,
            evidence=self._evidence(call, d),
            signal=self.tag_id,
            value=round(d.iso.velocity_rms_mm_s, 4),
        )

    def _cleared(self, code: str, d: Diagnosis, ts: float, deviation: float | None) -> Finding:
        return Finding(
            asset=self.asset,
            fault_code=FaultCode(code),
            severity=Priority.P3,
            score=0.0,
            detector=self.name,
            message=(
                f"`{code}` on `{self.asset}` no longer seen in {self.confirm_blocks} "
                f"consecutive analyses (ISO zone {d.iso.zone.value})."
            ),
            ts=ts,
            active=False,
            features=self._small_features(d, deviation),
            evidence=self._evidence(None, d),
            signal=self.tag_id,
            value=round(d.iso.velocity_rms_mm_s, 4),
        )
