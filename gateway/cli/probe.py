"""`edge-gateway probe DEVICE_FILE [--for SECONDS] [--json] [--site SITE]`: connect to one
device with its own settings, read it once (or for a while) and print every point.

Per point: the raw registers, node value or frame bytes, the decoded value with its unit and
state label, the quality with its reason, the source and gateway timestamps; and the request
plan used. The device file is checked first, as check-config would check it (with its site
when one is found above it). Read-only whatever the file says: the drivers can only read.

Exit 0 when every point was GOOD, 65 when one was BAD, UNCERTAIN or never read, 69 when the
device could not be reached, 78 when the device file does not pass the checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.probe_session import PointReport, ProbeResult, probe, waveform_summary
from gateway.cli.table import format_table, iso_time
from gateway.core.clock import SystemClock
from gateway.core.exit_codes import EX_CONFIG, EX_USAGE
from gateway.core.records import Quality, Sample, Waveform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device_file", help="the device's YAML file")
    parser.add_argument(
        "--for", dest="duration", type=float, metavar="SECONDS",
        help="keep reading (polling at the device's period, or listening) this long",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument("--site", help="the site to check the device file with")


def run(args: argparse.Namespace) -> int:
    if args.duration is not None and not 0 < args.duration <= 24 * 3600:
        print("--for must be between 0 and 86400 seconds", file=sys.stderr)
        return EX_USAGE
    if not args.verbose:
        # The drivers narrate connects and read plans at INFO; the probe prints them itself.
        logging.getLogger().setLevel(logging.WARNING)
    from gateway.config.check import check_device_file

    device_file = Path(args.device_file)
    site = Path(args.site) if args.site else None
    if site is not None and site.is_dir():
        site = site / "gateway.yaml"
    checked = check_device_file(device_file, site)
    for problem in [*checked.errors, *checked.warnings]:
        print(problem, file=sys.stderr)
    if checked.loaded is None:
        if checked.other_errors:
            print(
                f"{checked.other_errors} problem(s) in other files of the site; check it with "
                "`edge-gateway check-config`, or probe the file on its own with --site pointing"
                " at a site that loads",
                file=sys.stderr,
            )
        return EX_CONFIG
    loaded = checked.loaded
    key = os.path.realpath(device_file)
    path, config = next((p, c) for p, c in loaded.devices if os.path.realpath(p) == key)
    plugin = loaded.protocols.get(config.protocol)
    spec = config.spec(path)
    clock = SystemClock()
    [endpoint] = plugin.endpoints([spec], clock)
    result = asyncio.run(
        probe(config.id, config.protocol, endpoint, plugin.tags(spec), clock, args.duration)
    )
    if args.json:
        print(json.dumps(result_json(result), indent=2))
    else:
        print_result(result, args.duration, sys.stdout)
    return result.exit_code


# --- output ------------------------------------------------------------------------------


def value_text(report: PointReport, labels: dict[int, str] | None) -> str:
    record = report.last
    if record is None:
        return ""
    if isinstance(record, Waveform):
        return waveform_summary(record)
    if record.value is None:
        return ""
    text = f"{record.value:.6g}"
    unit = report.tag.unit
    if unit:
        text += f" {unit}"
    if labels:
        label = labels.get(int(record.value)) if record.value.is_integer() else None
        text += f" ({label})" if label is not None else " (no label)"
    return text


def quality_text(report: PointReport) -> str:
    record = report.last
    return "NO SAMPLE" if record is None else record.quality.name


def reason_text(report: PointReport) -> str:
    record = report.last
    if record is None:
        return "nothing received"
    return (record.reason or "") if isinstance(record, Sample) else ""


def readings_text(report: PointReport) -> str:
    not_good = [
        f"{report.counts[q]} {q.name}" for q in (Quality.BAD, Quality.UNCERTAIN) if report.counts[q]
    ]
    return f"{report.readings}" + (f" ({', '.join(not_good)})" if not_good else "")


def point_name(result: ProbeResult, report: PointReport) -> str:
    prefix = result.device + "."
    tag = report.tag.id
    return tag[len(prefix) :] if tag.startswith(prefix) else tag


def print_result(result: ProbeResult, duration_s: float | None, out: TextIO) -> None:
    window = f"for {duration_s:g} s" if duration_s is not None else "once"
    where = f" at {result.endpoint}" if result.endpoint else ""
    print(f"Probe of `{result.device}` ({result.protocol}){where}, read-only, {window}", file=out)
    if result.unreachable is not None:
        print(f"Device unreachable: {result.unreachable}", file=out)
        return
    if result.plan:
        print("Plan:", file=out)
        for line in result.plan:
            print(f"  {line}", file=out)
    rows = []
    for report in result.points:
        labels = result.labels.get(report.tag.id)
        record = report.last
        source_ts = record.source_ts if isinstance(record, Sample) else None
        rows.append(
            (
                point_name(result, report),
                report.raw or "",
                value_text(report, dict(labels) if labels else None),
                quality_text(report),
                iso_time(source_ts, date=False),
                iso_time(record.ts, date=False) if record is not None else "-",
                readings_text(report),
                reason_text(report),
            )
        )
    print("", file=out)
    headers = ("point", "raw", "value", "quality", "source time", "gateway time", "readings",
               "reason")  # fmt: skip
    print(format_table(headers, rows), file=out)
    print("", file=out)
    for failure in dict.fromkeys(result.failures):
        print(f"A poll failed: {failure}", file=out)
    print(summary_line(result), file=out)


def summary_line(result: ProbeResult) -> str:
    worst = [report.worst for report in result.points]
    counts = {
        "GOOD": sum(1 for q in worst if q is Quality.GOOD),
        "UNCERTAIN": sum(1 for q in worst if q is Quality.UNCERTAIN),
        "BAD": sum(1 for q in worst if q is Quality.BAD),
        "without a sample": sum(1 for q in worst if q is None),
    }
    shown = ", ".join(f"{n} {label}" for label, n in counts.items())
    noun = "point" if len(result.points) == 1 else "points"
    return (
        f"{len(result.points)} {noun}: {shown} (worst reading of each; {result.polls} "
        f"{'poll' if result.polls == 1 else 'polls'}, {iso_time(result.started)}, "
        f"{result.ended - result.started:.2f} s)"
    )


def result_json(result: ProbeResult) -> dict[str, Any]:
    points = []
    for report in result.points:
        record = report.last
        labels = result.labels.get(report.tag.id)
        entry: dict[str, Any] = {
            "name": point_name(result, report),
            "tag": report.tag.id,
            "unit": report.tag.unit,
            "raw": report.raw,
            "readings": report.readings,
            "counts": {q.name: report.counts[q] for q in Quality if report.counts[q]},
            "worst": report.worst.name if report.worst is not None else None,
            "quality": record.quality.name if record is not None else None,
            "time": iso_time(record.ts) if record is not None else None,
        }
        if isinstance(record, Waveform):
            entry["waveform"] = {
                "samples": len(record.data), "sample_rate_hz": record.sample_rate,
                "summary": waveform_summary(record),
            }  # fmt: skip
        elif isinstance(record, Sample):
            entry["value"] = record.value
            entry["reason"] = record.reason
            entry["source_time"] = iso_time(record.source_ts) if record.source_ts else None
            if labels and record.value is not None and record.value.is_integer():
                entry["label"] = labels.get(int(record.value))
        points.append(entry)
    return {
        "device": result.device,
        "protocol": result.protocol,
        "endpoint": result.endpoint,
        "connected": result.connected,
        "unreachable": result.unreachable,
        "plan": result.plan,
        "polls": result.polls,
        "failed_polls": result.failures,
        "started": iso_time(result.started),
        "duration_s": round(result.ended - result.started, 3),
        "points": points,
        "exit_code": result.exit_code,
    }
