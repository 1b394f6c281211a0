"""`edge-gateway status`: what a running daemon reports, read from its local `/status`
endpoint (gateway/runtime/health.py) and printed for a person, or as JSON with `--json`.

The address comes from `health:` in gateway.yaml (`--config`) or is given as `--url`. When the
configuration has no health endpoint (the shipped sites have none: it is off by default), the
command reads what the daemon keeps on disk instead: open tickets and the unsettled outbox from
state.db (read-only, safe beside the running daemon) and when telemetry.db was last written
(the daemon flushes it every `storage.telemetry_flush_s`), and says how to turn the endpoint on
for the live figures (devices, uplink, residency).

Exit status: 0 with a report (from the daemon, or from the files); 66 (EX_NOINPUT) when the
endpoint is off and there is no state.db to read; 69 (EX_UNAVAILABLE) when nobody answers at
the endpoint; 78 for a configuration that does not load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gateway.core.exit_codes import EX_CONFIG, EX_NOINPUT, EX_OK, EX_UNAVAILABLE

if TYPE_CHECKING:
    from gateway.config.loader import LoadedConfig

TIMEOUT_S = 5.0
HEALTH_HINT = (
    "For live figures (devices, uplink, residency) turn on the health endpoints: "
    "`health: {port: 9108}` in gateway.yaml, then `systemctl reload edge-gateway`."
)
# A running daemon writes telemetry.db at least every `storage.telemetry_flush_s` (1 s by
# default): every poll stores samples, BAD ones too when a device is down.
RECENT_WRITE_S = 60.0


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
            return report_from_files(loaded, args.json)
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


def report_from_files(loaded: LoadedConfig, as_json: bool) -> int:
    location = loaded.state_location()
    if not (location.path / "state.db").exists():
        print(f"status: the health endpoints are off, and {location.missing('state.db')}",
              file=sys.stderr)  # fmt: skip
        print(HEALTH_HINT, file=sys.stderr)
        return EX_NOINPUT
    cfg = loaded.gateway
    report = asyncio.run(read_files(location.path, cfg.site, cfg.gateway_id, loaded))
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_offline_report(report, sys.stdout)
    return EX_OK


async def read_files(
    state_dir: Path, site: str, gateway: str, loaded: LoadedConfig | None = None
) -> dict[str, Any]:
    """What the files of a gateway say without its endpoint; state.db is opened read-only.
    With the configuration, the outcome KPIs too: they are computed from the tickets."""
    from gateway.core.records import TicketState
    from gateway.store import StateDatabase

    now = time.time()
    outcomes: dict[str, Any] = {}
    store = await StateDatabase.open(state_dir / "state.db", read_only=True)
    try:
        tickets = await store.tickets.list_tickets(open_only=True)
        by_kind, oldest = await store.outbox.backlog()
        if loaded is not None:
            from gateway.assembly.ticketing import lifecycle_policy
            from gateway.ticketing.outcomes import Outcomes

            figures = Outcomes(lifecycle_policy(loaded.gateway.ticketing))
            figures.load(await store.tickets.tickets_since(now - figures.horizon_s))
            outcomes = figures.kpis(now, {t.key: t for t in tickets})
    finally:
        await store.close()
    return {
        "source": "files",
        "site": site,
        "gateway": gateway,
        "state_directory": str(state_dir),
        "tickets": {
            "open": len(tickets),
            "by_priority": dict(sorted(Counter(t.priority.value for t in tickets).items())),
            "waiting_for_central_ack": sum(1 for t in tickets if t.state is TicketState.OPENED),
            **outcomes,
        },
        "outbox": {
            "depth": sum(by_kind.values()),
            "by_kind": by_kind,
            "oldest_age_s": round(now - oldest, 3) if oldest is not None else None,
        },
        "telemetry_last_write_age_s": _last_write_age(state_dir, "telemetry.db", now),
    }


def _last_write_age(state_dir: Path, name: str, now: float) -> float | None:
    """Seconds since the database or its write-ahead log last changed (WAL mode: the WAL
    takes the writes between checkpoints)."""
    times = []
    for path in (state_dir / name, state_dir / f"{name}-wal"):
        try:
            times.append(os.stat(path).st_mtime)
        except FileNotFoundError:
            continue
    return round(max(0.0, now - max(times)), 1) if times else None


def print_offline_report(report: Mapping[str, Any], out: TextIO) -> None:
    def line(label: str, value: object) -> None:
        print(f"  {label:<22} {value}", file=out)

    print(
        f"Gateway {report['gateway']} of site {report['site']} — health endpoints off; "
        f"read from the files in {report['state_directory']}",
        file=out,
    )
    age = report["telemetry_last_write_age_s"]
    if age is None:
        written = "telemetry.db not written yet"
    elif age <= RECENT_WRITE_S:
        written = f"telemetry.db last written {_duration(age)} ago: the daemon is probably running"
    else:
        written = f"telemetry.db last written {_duration(age)} ago: the daemon is probably stopped"
    line("data", written)
    tickets = report["tickets"]
    line(
        "open tickets",
        f"{tickets['open']} ({_pairs(tickets['by_priority'])}), "
        f"{tickets['waiting_for_central_ack']} waiting for the central ack",
    )
    print_ticket_kpis(tickets, out)
    outbox = report["outbox"]
    oldest = outbox["oldest_age_s"]
    line(
        "outbox",
        f"{outbox['depth']} unsettled ({_pairs(outbox['by_kind'])}), oldest "
        + (_duration(oldest) if oldest is not None else "-"),
    )
    print(HEALTH_HINT, file=out)


def print_ticket_kpis(kpis: Mapping[str, Any], out: TextIO) -> None:
    """The maintenance KPIs as an operations manager reads them."""

    def line(label: str, value: object) -> None:
        print(f"  {label:<22} {value}", file=out)

    def share(name: str) -> str:
        value = kpis.get(name)
        return f"{value * 100:.1f} %" if isinstance(value, int | float) else "-"

    def mean(name: str) -> str:
        value = kpis.get(name)
        return _duration(value) if isinstance(value, int | float) else "-"

    if "repeat_report_rate" not in kpis:
        return
    print(f"Tickets (outcomes over {kpis.get('window_days', 30):.0f} days)", file=out)
    ages = kpis.get("open_by_priority_and_age", {})
    for priority, buckets in sorted(ages.items()):
        if any(buckets.values()):
            line(f"open {priority} by age", _pairs({k: v for k, v in buckets.items() if v}))
    line("overdue", f"{kpis.get('overdue', 0)} ({share('overdue_share')} of open)")
    line("unattended", kpis.get("unattended", 0))
    line("mean time to respond", f"{mean('mean_time_to_respond_s')} ({kpis.get('responses', 0)})")
    line("mean time to resolve", f"{mean('mean_time_to_resolve_s')} ({kpis.get('resolved', 0)})")
    line("resolved within SLA", share("resolve_sla_rate"))
    line("first-time fix", share("first_time_fix_rate"))
    line(
        "repeat reports",
        f"{share('repeat_report_rate')} ({kpis.get('re_reported', 0)} of "
        f"{kpis.get('resolutions', 0)} resolutions)",
    )
    line(
        "eradicated",
        f"{share('eradication_rate')} ({kpis.get('eradicated', 0)} of "
        f"{kpis.get('eradication_checked', 0)} checked)",
    )
    for advisory in kpis.get("quality_advisories", []):
        line(
            "quality advisory",
            f"{advisory['fault_code']} on model {advisory['model']}: {advisory['count']} times",
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


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


def verdict(report: Mapping[str, Any]) -> str:
    """One phrase for the headline. `ready` in the report means the pipeline runs; a gateway
    whose devices all fail to answer collects nothing, and the headline says so."""
    if not report["ready"]:
        return "NOT READY (starting or stopping)"
    devices = report["devices"]
    down = sum(1 for device in devices if not device["up"])
    if devices and down == len(devices):
        return f"NOT READY: no device answers ({down} of {len(devices)} down)"
    if down:
        return f"DEGRADED: {down} of {len(devices)} devices down"
    return "ready"


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
        f"Gateway {report['gateway']} of site {report['site']} — {verdict(report)}, "
        f"up {report['uptime_s']:.0f} s",
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
    if isinstance(report.get("tickets"), Mapping):
        print_ticket_kpis(report["tickets"], out)
