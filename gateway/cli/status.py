"""`edge-gateway status`: what a running daemon reports, read from its local `/status`
endpoint (gateway/health.py) and printed for a person, or as JSON with `--json`.

The address comes from `health:` in gateway.yaml (`--config`) or is given as `--url`. Exit 0
when the daemon answered, 69 (EX_UNAVAILABLE) when it did not, 78 for a config without
health endpoints.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, TextIO

from gateway.core.exit_codes import EX_CONFIG, EX_OK, EX_UNAVAILABLE

TIMEOUT_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", help="gateway.yaml or its folder (reads `health:` from it)")
    where.add_argument("--url", help="base URL of the health endpoints, e.g. http://127.0.0.1:9108")
    parser.add_argument("--json", action="store_true", help="print the raw JSON document")


def run(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        from gateway.config.loader import load_config
        from gateway.core.errors import ConfigError

        try:
            loaded = load_config(args.config or ".")
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return EX_CONFIG
        health = loaded.gateway.health
        if health.port is None:
            print(
                "The health endpoints are off: set `health: {port: 9108}` in gateway.yaml "
                "and reload the daemon.",
                file=sys.stderr,
            )
            return EX_CONFIG
        url = f"http://{health.host}:{health.port}"
    try:
        report = fetch_status(url)
    except OSError as exc:
        print(f"No gateway answers at {url}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_report(report, sys.stdout)
    return EX_OK


def fetch_status(base_url: str) -> dict[str, Any]:
    """GET <base>/status; raises `OSError` (URLError is one) when nobody answers."""
    with urllib.request.urlopen(base_url.rstrip("/") + "/status", timeout=TIMEOUT_S) as reply:
        document: dict[str, Any] = json.loads(reply.read())
    return document


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover - the loop always returns


def _pairs(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(mapping.items())) or "none"


def _point_quality(device: Mapping[str, Any]) -> list[str]:
    """Lines about the device's points: samples counted BAD or UNCERTAIN and the points that
    are so now, and points of a stream that never delivered (empty when all is well). A
    daemon without these fields (older) prints none."""
    lines = []
    bad, uncertain = device.get("bad_samples", 0), device.get("uncertain_samples", 0)
    if bad or uncertain:
        lines.append(f"samples BAD {bad}, UNCERTAIN {uncertain}")
    for key, label in (
        ("bad_points", "BAD now"),
        ("uncertain_points", "UNCERTAIN now"),
        ("silent_points", "never delivered"),
    ):
        names = device.get(key) or []
        if names:
            lines.append(f"{label}: {', '.join(names)}")
    return lines


def print_report(report: Mapping[str, Any], out: TextIO) -> None:
    """A few aligned sections, the way an operator reads them at a terminal."""

    def line(label: str, value: object) -> None:
        print(f"  {label:<22} {value}", file=out)

    print(
        f"Gateway {report['gateway']} of site {report['site']} — "
        f"{'ready' if report['ready'] else 'NOT READY'}, up {report['uptime_s']:.0f} s",
        file=out,
    )
    print("Devices", file=out)
    for device in report["devices"]:
        latency = device["latency_s"]
        latency_text = f"{latency * 1000:.1f} ms" if latency is not None else "-"
        error = f"  last error: {device['last_error']}" if device["last_error"] else ""
        print(
            f"  {device['device']:<22} {device['state']:<12} polls {device['polls']:<8} "
            f"errors {device['errors']:<6} latency {latency_text}{error}",
            file=out,
        )
        for text in _point_quality(device):
            print(f"  {'':<22} {text}", file=out)
    pipeline = report["pipeline"]
    print("Pipeline", file=out)
    line("queue depth", pipeline["queue_depth"])
    line("records / findings", f"{pipeline['records']} / {pipeline['findings']}")
    line("detector time", f"{pipeline['detector_seconds']:.3f} s")
    uplink = report["uplink"]
    outbox = report["outbox"]
    print("Uplink", file=out)
    line("broker", "connected" if uplink["connected"] else "DISCONNECTED")
    line("reconnects", uplink["reconnects"])
    line("half-open aborts", uplink["half_open_aborts"])
    line("published / resent", f"{uplink['published']} / {uplink['resent']}")
    oldest = outbox["oldest_age_s"]
    line(
        "outbox",
        f"{outbox['depth']} unsettled ({_pairs(outbox['by_kind'])}), oldest "
        + (f"{oldest:.0f} s" if oldest is not None else "-"),
    )
    line("drops", _pairs(report["drops"]))
    telemetry = report["telemetry"]
    print("Telemetry (on site)", file=out)
    line("samples written", telemetry["samples_written"])
    line("refusing writes", "YES" if telemetry["refusing"] else "no")
    trimmed = telemetry["rows_trimmed_for_size"]
    line("pruned / trimmed rows", f"{telemetry['rows_pruned']} / {trimmed}")
    residency = report["residency"]
    print("Data residency since start", file=out)
    line("acquired from devices", _size(residency["acquired_bytes"]))
    sent = residency["sent_bytes"]
    line("sent off-site", _size(sum(sent.values())))
    for kind, count in sorted(sent.items()):
        messages = residency["sent_messages"].get(kind, 0)
        line(f"  {kind}", f"{_size(count)} in {messages} message(s)")
    refused = residency["refused_by_guard"]
    line("refused by the guard", _pairs(refused))
