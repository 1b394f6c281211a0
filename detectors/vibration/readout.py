"""What a planner and a technician read about a vibration finding: whole sentences, with units.

The ticket's `message` is one paragraph; its evidence carries `readout`, a list of short lines
(matched line and its distance from the kinematic frequency, the harmonics and their levels,
the speed used, the band, what to check). The machine-readable evidence stays beside them for
the central system's own use; nothing here is a Python structure printed as text.
"""

from __future__ import annotations

from typing import Any

from detectors.vibration.diagnose import Diagnosis, FaultCall
from detectors.vibration.iso20816 import Zone
from gateway.core.records import FaultCode

WHAT = {
    FaultCode.BEARING_OUTER_RACE: "Outer-race defect",
    FaultCode.BEARING_INNER_RACE: "Inner-race defect",
    FaultCode.BEARING_ROLLING_ELEMENT: "Rolling-element (ball) defect",
    FaultCode.BEARING_CAGE: "Cage defect",
}
CHECK = {
    FaultCode.BEARING_OUTER_RACE: (
        "Check the outer race in the load zone for spalling and the grease for metal "
        "particles; plan a bearing replacement."
    ),
    FaultCode.BEARING_INNER_RACE: (
        "Check the inner race for spalling and the shaft fit for creep marks; plan a "
        "bearing replacement."
    ),
    FaultCode.BEARING_ROLLING_ELEMENT: (
        "Check the balls for flats or pits and the lubricant for contamination; plan a "
        "bearing replacement."
    ),
    FaultCode.BEARING_CAGE: (
        "Check the cage for wear or cracks and the lubrication; plan a bearing replacement."
    ),
    FaultCode.UNBALANCE: (
        "Check the rotor for deposits, wear or a lost balance weight; balance it at the next stop."
    ),
    FaultCode.MISALIGNMENT: "Check the coupling alignment and soft foot under the machine feet.",
    FaultCode.LOOSENESS: "Check foundation bolts, bearing housing fasteners and bearing fits.",
}
SPEED_SOURCE = {
    "waveform": "sent with the waveform",
    "tag": "from the speed tag",
    "fixed": "configured fixed speed",
    "given": "given",
    "estimated": "estimated from the spectrum",
}


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _ordinal_list(lines: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{ln['line']} at {ln['freq_hz']:.1f} Hz {ln['level_db']:.1f} dB" for ln in lines
    )


def _speed(d: Diagnosis) -> str:
    if d.shaft_hz is None:
        return "unknown"
    source = SPEED_SOURCE.get(d.speed_source, d.speed_source)
    return f"{d.shaft_hz * 60:.0f} rpm ({d.shaft_hz:.2f} Hz, {source})"


def bearing_readout(call: FaultCall, d: Diagnosis) -> list[str]:
    ev = call.evidence
    code = FaultCode(call.code)
    deciding = [ln for ln in ev["harmonic_lines"] if ln["significant"]]
    others = [ln for ln in ev["harmonic_lines"] if not ln["significant"]]
    out = [
        f"Matched line: {ev['defect_line']} fitted at {ev['matched_hz']:.1f} Hz, "
        f"{abs(ev['deviation_pct']):.1f} % {'above' if ev['deviation_pct'] >= 0 else 'below'} "
        f"the kinematic {ev['expected_hz']:.1f} Hz (slip tolerance ±{ev['tolerance_pct']:.0f} %).",
        f"Harmonics that decided (level above the envelope floor): {_ordinal_list(deciding)}.",
    ]
    if others:
        out.append(f"Harmonics not above the floor: {_ordinal_list(others)}.")
    if "sideband_spacing" in ev:
        total = len(ev["sideband_lines"])
        out.append(
            f"Sidebands at the {ev['sideband_spacing']} ({ev['sideband_spacing_hz']:.1f} Hz): "
            f"{ev['sidebands']} of {total} above the floor (supporting evidence only)."
        )
    trials = ev["trials"]
    out += [
        f"Speed used: {_speed(d)}.",
        f"Envelope band: {ev['band_hz'][0]:.0f}-{ev['band_hz'][1]:.0f} Hz, the best of "
        f"{trials['bands']} bands screened; chance under noise 1e{ev['log10_p_chance']:.0f} "
        f"after correcting for {trials['bands']} bands, {trials['combs']} defect combs and "
        f"{trials['candidates']} candidate frequencies.",
        _iso_line(d),
        f"What to check: {CHECK[code]}",
    ]
    return out


def _iso_line(d: Diagnosis) -> str:
    a, b, c = d.iso.boundaries_mm_s
    return (
        f"Overall velocity {d.iso.velocity_rms_mm_s:.2f} mm/s RMS (10-1000 Hz), ISO 10816-3 "
        f"zone {d.iso.zone.value} (group {int(d.iso.group)}, {d.iso.foundation.value}; zone "
        f"boundaries {a}, {b}, {c} mm/s)."
    )


def machine_readout(call: FaultCall, d: Diagnosis) -> list[str]:
    out = [f"Speed used: {_speed(d)}.", _iso_line(d)]
    if d.orders is not None and call.code != FaultCode.VIBRATION_SEVERITY:
        peaks = ", ".join(
            f"{k} {p.amplitude:.2f} mm/s at {p.freq_hz:.1f} Hz" for k, p in d.orders.peaks.items()
        )
        out.append(f"Running-speed lines (velocity RMS): {peaks}.")
    if FaultCode(call.code) in CHECK:
        out.append(f"What to check: {CHECK[FaultCode(call.code)]}")
    elif d.iso.zone is Zone.D:
        out.append("What to check: damage is likely; stop the machine and inspect it.")
    else:
        out.append("What to check: restricted operation; plan corrective action.")
    return out


def readout(call: FaultCall, d: Diagnosis) -> list[str]:
    if "defect_line" in call.evidence:
        return bearing_readout(call, d)
    return machine_readout(call, d)


def message(call: FaultCall, d: Diagnosis, asset: str) -> str:
    """One paragraph for the ticket's message."""
    ev = call.evidence
    code = FaultCode(call.code)
    zone = d.iso.zone.value
    v = d.iso.velocity_rms_mm_s
    if code in WHAT:
        return (
            f"{WHAT[code]} on bearing {d.bearing} of `{asset}`: envelope harmonics "
            f"{_and([f'{h}x' for h in ev['harmonics']])} of {ev['matched_hz']:.1f} Hz "
            f"({ev['defect_line']}, kinematic {ev['expected_hz']:.1f} Hz, "
            f"{ev['deviation_pct']:+.1f} %), up to {ev['snr_db']:.0f} dB above the floor in the "
            f"{ev['band_hz'][0]:.0f}-{ev['band_hz'][1]:.0f} Hz band at "
            f"{d.shaft_hz * 60 if d.shaft_hz else 0:.0f} rpm. {CHECK[code]}"
        )
    if code is FaultCode.UNBALANCE:
        return (
            f"Unbalance on `{asset}`: 1x running speed carries {ev['share_1x']:.0%} of the "
            f"vibration ({v:.2f} mm/s RMS, ISO zone {zone}). {CHECK[code]}"
        )
    if code is FaultCode.MISALIGNMENT:
        return (
            f"Misalignment on `{asset}`: 2x running speed at {ev['ratio_2x_1x']:.0%} of 1x "
            f"({v:.2f} mm/s RMS, ISO zone {zone}). {CHECK[code]}"
        )
    if code is FaultCode.LOOSENESS:
        return (
            f"Mechanical looseness on `{asset}`: {ev['harmonics_3x_10x_seen']} running-speed "
            f"harmonics above the floor ({v:.2f} mm/s RMS, ISO zone {zone}). {CHECK[code]}"
        )
    action = (
        "damage is likely, stop and inspect"
        if d.iso.zone is Zone.D
        else "restricted operation, plan corrective action"
    )
    return (
        f"Vibration on `{asset}` at {v:.2f} mm/s RMS is in ISO 10816-3 zone {zone}: {action}."
    )
