"""`edge-gateway analyze FILE`: the vibration family run offline on a recording (issue 4, item 3).

Exit status: 0 with a diagnosis; 65 (EX_DATAERR) when the data cannot be diagnosed (no
recognisable channel, NaN, clipping, too short, a sample rate or speed that puts the bearing
frequencies out of reach) -- the message on stderr names the problem and no diagnosis is
printed; 66 (EX_NOINPUT) when the file does not exist; 2 for a bad command line (argparse).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from detectors.vibration.bearing import BearingGeometry
from detectors.vibration.catalogue import BearingCatalogue
from detectors.vibration.diagnose import Diagnosis, diagnose
from detectors.vibration.errors import BadSignal
from detectors.vibration.iso20816 import Foundation, MachineGroup
from detectors.vibration.recordings import read_recording
from gateway.core.exit_codes import EX_DATAERR, EX_NOINPUT, EX_USAGE_ARGPARSE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="recording: CWRU or MFPT .mat, .npy, .csv, or an IMS ASCII file",
    )
    parser.add_argument(
        "--fs", type=float, metavar="HZ", help="sample rate; default from the file's layout"
    )
    parser.add_argument(
        "--rpm",
        type=float,
        metavar="RPM",
        help="shaft speed; default from the file, else estimated from the spectrum",
    )
    parser.add_argument(
        "--bearing",
        metavar="NAME",
        help="catalogue name (e.g. 6205; an unknown name lists the known ones) or geometry as "
        "BALLS:BALL_DIA:PITCH_DIA[:CONTACT_DEG]; default from the layout",
    )
    parser.add_argument(
        "--channel",
        metavar="NAME",
        help="channel: DE/FE/BA (CWRU), 1-8 (IMS), column name or index",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _geometry(spec: str) -> BearingGeometry:
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"bearing geometry `{spec}`: expected BALLS:BALL_DIA:PITCH_DIA[:DEG]")
        return BearingGeometry(
            name=f"custom {spec}",
            balls=int(parts[0]),
            ball_diameter=float(parts[1]),
            pitch_diameter=float(parts[2]),
            contact_angle_deg=float(parts[3]) if len(parts) == 4 else 0.0,
        )
    return BearingCatalogue.load().get(spec)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    path: Path = Path(args.file)
    try:
        rec = read_recording(path, args.channel)
        fs = args.fs if args.fs is not None else rec.fs
        if fs is None:
            raise BadSignal(
                f"`{path.name}`: the sample rate is not stored in a {rec.layout} "
                "file; give it with --fs"
            )
        rpm = args.rpm if args.rpm is not None else rec.rpm
        if rpm is not None and (not math.isfinite(rpm) or rpm <= 0):
            raise BadSignal(f"running speed {rpm} rpm is not a positive number")
        bearing_name = args.bearing if args.bearing is not None else rec.bearing
        geometry = _geometry(bearing_name) if bearing_name else None
        diagnosis = diagnose(
            rec.signal,
            fs,
            shaft_hz=None if rpm is None else rpm / 60.0,
            geometry=geometry,
            group=MachineGroup.MEDIUM,
            foundation=Foundation.RIGID,
        )
    except FileNotFoundError as exc:
        print(f"analyze: {exc}", file=err)
        return EX_NOINPUT
    except (KeyError, ValueError) as exc:  # unknown bearing name or malformed geometry
        print(f"analyze: {exc.args[0] if exc.args else exc}", file=err)
        return EX_USAGE_ARGPARSE
    except BadSignal as exc:
        print(f"analyze: {path.name}: {exc}", file=err)
        return EX_DATAERR
    source = {
        "file": str(path),
        "layout": rec.layout,
        "channel": rec.channel,
        "channels": list(rec.channels),
        "fs_hz": fs,
        "fs_source": "argument" if args.fs is not None else "file layout",
        "rpm_source": "argument"
        if args.rpm is not None
        else ("file" if rec.rpm is not None else diagnosis.speed_source),
        "notes": rec.notes,
    }
    if args.json:
        payload: dict[str, Any] = {**diagnosis.to_dict(), "source": source}
        print(json.dumps(payload, indent=2), file=out)
    else:
        print(render_report(diagnosis, source), file=out)
    return 0


def render_report(d: Diagnosis, source: dict[str, Any]) -> str:
    lines = [
        f"File      {source['file']}  ({source['layout']}, channel {source['channel']}, "
        f"{d.fs:g} Hz from {source['fs_source']})",
    ]
    speed = (
        "unknown"
        if d.shaft_hz is None
        else (f"{d.shaft_hz * 60:.0f} rpm ({d.shaft_hz:.2f} Hz, {source['rpm_source']})")
    )
    lines.append(f"Speed     {speed}")
    lines.append(f"Bearing   {d.bearing or 'none given'}")
    top = d.faults[0] if d.faults else None
    verdict = d.verdict if top is None else f"{d.verdict} (confidence {top.confidence:.2f})"
    lines.append(f"Verdict   {verdict}")
    for f in d.faults:
        lines.append(f"  - {f.code:<24} confidence {f.confidence:.2f}  {_describe(f.evidence)}")
    iso = d.iso
    a, b, c = iso.boundaries_mm_s
    lines.append(
        f"ISO 10816-3  velocity RMS 10-1000 Hz {iso.velocity_rms_mm_s:.2f} mm/s -> zone "
        f"{iso.zone.value} (group {int(iso.group)}, {iso.foundation.value}; A/B {a}, B/C {b}, "
        f"C/D {c} mm/s)"
    )
    ft = d.features
    lines.append(
        f"Features  accel RMS {ft.accel_rms_g:.3f} g, peak {ft.accel_peak_g:.3f} g, crest "
        f"{ft.crest_factor:.2f}, kurtosis {ft.kurtosis:.2f}"
    )
    if d.defect is not None:
        df = d.defect
        lines.append(
            f"Defect lines  BPFO {df.bpfo:.1f}  BPFI {df.bpfi:.1f}  BSF {df.bsf:.1f} "
            f"(2x {df.two_bsf:.1f})  FTF {df.ftf:.1f} Hz"
        )
    if d.band is not None:
        lines.append(
            f"Envelope band {d.band.lo_hz:.0f}-{d.band.hi_hz:.0f} Hz (spectral kurtosis "
            f"{d.band.kurtosis:.2f}); top envelope lines: "
            + ", ".join(f"{p.freq_hz:.1f} Hz ({p.snr_db:.0f} dB)" for p in d.envelope_peaks)
        )
    if d.orders is not None:
        lines.append(
            "Orders    "
            + ", ".join(
                f"{k} {p.amplitude:.3f} mm/s @ {p.freq_hz:.1f} Hz"
                for k, p in d.orders.peaks.items()
            )
        )
    lines.append(f"Analysis  {d.blocks} blocks of {d.block_length} samples, 50 % overlap")
    lines += [f"Note      {n}" for n in [*source["notes"], *d.notes]]
    return "\n".join(lines)


def _describe(ev: dict[str, Any]) -> str:
    if "defect_line" in ev:
        harmonics = ",".join(str(h) for h in ev["harmonics"]) or "none"
        return (
            f"{ev['defect_line']} expected {ev['expected_hz']:.1f} Hz, matched "
            f"{ev['matched_hz']:.1f} Hz ({ev['deviation_pct']:+.1f} %), harmonics {harmonics}, "
            f"sidebands {ev['sidebands']}, strongest line {ev['snr_db']:.1f} dB above floor "
            f"[{ev['method']} {ev['band_hz'][0]:.0f}-{ev['band_hz'][1]:.0f} Hz]"
        )
    if "share_1x" in ev:
        return (
            f"zone {ev['zone']}, 1x share {ev['share_1x']:.2f}, 2x/1x {ev['ratio_2x_1x']:.2f}, "
            f"harmonics 3-10x seen {ev['harmonics_3x_10x_seen']}"
        )
    return f"zone {ev.get('zone')}"


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m gateway.cli.analyze`) until the CLI dispatches to `run`."""
    parser = argparse.ArgumentParser(prog="edge-gateway analyze")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
