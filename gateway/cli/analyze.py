"""`edge-gateway analyze FILE`: the vibration family run offline on a recording.

It prints the diagnosis of the whole record and, in the `daemon` object, the tickets the
running detector with the default rule settings would open on it (detectors/vibration/replay.py):
both reach their verdicts through the same decision (detectors/vibration/diagnose.py).

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

from detectors.vibration import readout
from detectors.vibration.bearing import BearingGeometry
from detectors.vibration.catalogue import BearingCatalogue
from detectors.vibration.detector import VibrationDetector
from detectors.vibration.diagnose import Diagnosis, diagnose
from detectors.vibration.errors import BadSignal
from detectors.vibration.iso20816 import Foundation, MachineGroup
from detectors.vibration.recordings import read_recording
from detectors.vibration.replay import DAEMON_BLOCK, replay
from detectors.vibration.rule import VibrationRule
from gateway.core.exit_codes import EX_DATAERR, EX_NOINPUT, EX_USAGE_ARGPARSE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="recording: .mat (CWRU, MFPT, or any file holding one numeric vector), .npz, "
        ".npy, .wav, .csv, or an IMS ASCII file",
    )
    parser.add_argument(
        "--fs",
        type=float,
        metavar="HZ",
        help="sample rate; required where the file does not store it (.npy, .csv, most .mat)",
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
        help="channel: DE/FE/BA (CWRU), 1-8 (IMS), 1-N (.wav), a variable of a .mat or .npz "
        "(NAME:INDEX for a column of a 2-D one), a column name or index",
    )
    parser.add_argument(
        "--scale",
        type=float,
        metavar="G",
        help="acceleration in g of one unit of the file's samples (e.g. of full scale for "
        ".wav); default 1",
    )
    parser.add_argument(
        "--daemon-block",
        type=int,
        default=DAEMON_BLOCK,
        metavar="N",
        help=f"block length the daemon replay cuts the recording into (default {DAEMON_BLOCK})",
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


def _positive(name: str, value: float | None, unit: str) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise BadSignal(f"{name} {value} {unit} is not a positive number")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    path: Path = Path(args.file)
    try:
        rec = read_recording(path, args.channel)
        _positive("sample rate", args.fs, "Hz")
        _positive("running speed", args.rpm, "rpm")
        _positive("scale", args.scale, "g per unit")
        fs = args.fs if args.fs is not None else rec.fs
        if fs is None:
            raise BadSignal(
                f"`{path.name}`: the sample rate is not stored in this {rec.layout} file; "
                "give it with --fs"
            )
        rpm = args.rpm if args.rpm is not None else rec.rpm
        bearing_name = args.bearing if args.bearing is not None else rec.bearing
        geometry = _geometry(bearing_name) if bearing_name else None
        signal = rec.signal if args.scale is None else rec.signal * args.scale
        diagnosis = diagnose(
            signal,
            fs,
            shaft_hz=None if rpm is None else rpm / 60.0,
            geometry=geometry,
            group=MachineGroup.MEDIUM,
            foundation=Foundation.RIGID,
        )
        daemon = daemon_replays(signal, fs, rpm, geometry, args.daemon_block)
    except FileNotFoundError as exc:
        print(f"analyze: {exc}", file=err)
        return EX_NOINPUT
    except (KeyError, ValueError) as exc:  # unknown bearing name or malformed geometry
        print(f"analyze: {exc.args[0] if exc.args else exc}", file=err)
        return EX_USAGE_ARGPARSE
    except BadSignal as exc:
        print(f"analyze: {path.name}: {exc}", file=err)
        return EX_DATAERR
    notes = list(rec.notes)
    if args.fs is not None and rec.fs is not None and args.fs != rec.fs:
        notes.append(f"--fs {args.fs:g} Hz overrides the {rec.fs:g} Hz the file states")
    source = {
        "file": str(path),
        "layout": rec.layout,
        "channel": rec.channel,
        "channels": list(rec.channels),
        "fs_hz": fs,
        "fs_source": "argument" if args.fs is not None else "file",
        "rpm_source": "argument"
        if args.rpm is not None
        else ("file" if rec.rpm is not None else diagnosis.speed_source),
        "scale_g_per_unit": 1.0 if args.scale is None else args.scale,
        "notes": notes,
    }
    if args.json:
        payload: dict[str, Any] = {**diagnosis.to_dict(), "daemon": daemon, "source": source}
        print(json.dumps(payload, indent=2), file=out)
    else:
        print(render_report(diagnosis, source, daemon), file=out)
    return 0


def daemon_replays(
    signal: Any, fs: float, rpm: float | None, geometry: BearingGeometry | None, block: int
) -> dict[str, Any]:
    """What the running detector with the default rule settings would open on the recording:
    fed `block`-sample blocks, contiguous and half-overlapping."""
    if block < 2:
        raise ValueError(f"--daemon-block must be at least 2 samples, got {block}")
    # The rule's defaults, as a device file that names only the signal, bearing and speed.
    rule = VibrationRule(name="analyze", kind="vibration", signal="recording", rpm=rpm)
    feeds = []
    for overlap in (0.0, 0.5):
        detector = VibrationDetector(
            asset="recording",
            tag_id="recording",
            geometry=geometry,
            machine_group=MachineGroup(rule.machine_group),
            foundation=Foundation(rule.foundation),
            fixed_rpm=rule.rpm,
            confirm_blocks=rule.confirm_blocks,
            baseline_blocks=rule.baseline_blocks,
            average_blocks=rule.average_blocks,
        )
        feed = replay(detector, signal, fs, block=block, overlap=overlap).to_dict()
        if feed["blocks"] == 0:
            feed["not_diagnosed"] = (
                f"the recording ({signal.size} samples) is shorter than one block of {block}"
            )
        feeds.append(feed)
    return {
        "rule": {
            "confirm_blocks": rule.confirm_blocks,
            "average_blocks": rule.average_blocks,
            "baseline_blocks": rule.baseline_blocks,
            "machine_group": rule.machine_group,
            "foundation": rule.foundation,
            "rpm": rule.rpm,
            "bearing": None if geometry is None else geometry.name,
        },
        "block_length": block,
        "feeds": feeds,
    }


def render_report(d: Diagnosis, source: dict[str, Any], daemon: dict[str, Any]) -> str:
    lines = [
        f"File      {source['file']}  ({source['layout']}, channel {source['channel']}, "
        f"{d.fs:g} Hz from the {source['fs_source']})",
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
        lines.append(f"  - {f.code} (confidence {f.confidence:.2f})")
        lines += [f"      {line}" for line in readout.readout(f, d)]
    for f in d.withheld:
        lines.append(
            f"  Also passed, not called (one location per bearing): {f.code} "
            f"(confidence {f.confidence:.2f})"
        )
    for code in d.not_dominant:
        lines.append(
            f"  Also passed, not called (its band's strongest line is not its own): {code}"
        )
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
        band = d.band.describe() if d.band is not None else "whole band"  # of the call
        lines.append(
            f"Envelope  {d.bands_screened} bands screened; strongest lines of the {band}: "
            + ", ".join(f"{p.freq_hz:.1f} Hz ({p.snr_db:.0f} dB)" for p in d.envelope_peaks)
        )
    if d.orders is not None:
        lines.append(
            "Orders    "
            + ", ".join(
                f"{k} {p.amplitude:.3f} mm/s at {p.freq_hz:.1f} Hz"
                for k, p in d.orders.peaks.items()
            )
        )
    count = f"{d.blocks} block" + ("s" if d.blocks != 1 else "")
    lines.append(f"Analysis  {count} of {d.block_length} samples, 50 % overlap")
    lines += _daemon_lines(daemon)
    lines += [f"Note      {n}" for n in [*source["notes"], *d.notes]]
    return "\n".join(lines)


def _daemon_lines(daemon: dict[str, Any]) -> list[str]:
    rule = daemon["rule"]
    out = [
        f"Daemon    default rule (confirm_blocks {rule['confirm_blocks']}, average_blocks "
        f"{rule['average_blocks']}) fed {daemon['block_length']}-sample blocks:"
    ]
    for feed in daemon["feeds"]:
        how = "contiguous" if feed["overlap"] == 0 else f"{feed['overlap']:.0%} overlapping"
        opened = [t for t in feed["tickets"] if t["event"] == "opened"]
        tickets = (
            ", ".join(
                f"opens {t['code']} at block {t['block']} ({t['at_s']:.1f} s)" for t in opened
            )
            or "opens no ticket"
        )
        extra = f"; not diagnosed: {feed['not_diagnosed']}" if feed["not_diagnosed"] else ""
        out.append(f"  - {how}, {feed['blocks']} blocks: {tickets}{extra}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m gateway.cli.analyze`) until the CLI dispatches to `run`."""
    parser = argparse.ArgumentParser(prog="edge-gateway analyze")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
