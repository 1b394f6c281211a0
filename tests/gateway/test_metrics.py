"""`/metrics` read as Prometheus reads it: prometheus_client's own text parser, several devices,
every family typed, process and build figures, and every number `status` shows."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import gateway
from gateway.app import Gateway
from gateway.config.loader import load_config
from gateway.core.clock import SystemClock
from gateway.runtime.metrics import render_metrics
from tests.gateway.test_health import REPORT, http_get
from tests.support.broker import free_loopback_port
from tests.test_end_to_end import start_pump, stop_task

# The families the gateway exports (docs/RELIABILITY.md, "Metrics"). A counter's family name
# is without `_total`; its sample is `<name>_total`. The text format has no info type: an info
# family is a gauge `<name>_info` of value 1 whose labels carry the text.
GATEWAY_FAMILIES = {
    "up": "gauge", "build_info": "gauge", "site_info": "gauge", "ready": "gauge",
    "uptime_seconds": "gauge",
    "device_polls": "counter", "device_errors": "counter", "device_reconnects": "counter",
    "device_poll_latency_seconds": "gauge", "device_up": "gauge",
    "device_bad_samples": "counter", "device_uncertain_samples": "counter",
    "device_bad_points": "gauge",
    "queue_depth": "gauge", "records": "counter", "samples_stored": "counter",
    "waveforms": "counter", "findings": "counter", "detectors_disabled": "gauge",
    "detector_seconds": "counter",
    "uplink_connected": "gauge", "uplink_connects": "counter", "uplink_reconnects": "counter",
    "uplink_connection_losses": "counter", "uplink_published": "counter",
    "uplink_resent": "counter", "uplink_publish_failures": "counter",
    "uplink_half_open_aborts": "counter", "uplink_central_acks": "counter",
    "uplink_commands": "counter", "uplink_rejected_commands": "counter",
    "uplink_rate_limited_commands": "counter", "uplink_busy_commands": "counter",
    "uplink_failed_commands": "counter",
    "outbox_depth": "gauge", "outbox_depth_by_kind": "gauge",
    "outbox_oldest_age_seconds": "gauge", "outbox_max_messages": "gauge", "drops": "counter",
    "telemetry_samples_written": "counter", "telemetry_waveforms_written": "counter",
    "telemetry_samples_refused": "counter", "telemetry_waveforms_refused": "counter",
    "telemetry_rows_pruned": "counter", "telemetry_rows_trimmed": "counter",
    "telemetry_refusing": "gauge",
    "bytes_in": "counter", "bytes_out": "counter", "messages_out": "counter",
    "guard_refused": "counter",
    "tickets_open": "gauge", "tickets_opened": "counter", "tickets_recurrences": "counter",
    "tickets_renotified": "counter", "incidents": "counter", "floods_started": "counter",
    "time_in_flood_seconds": "counter", "conditions_top10_share": "gauge",
    "tickets_repeat_report_rate": "gauge", "conditions_per_10min": "gauge",
    # Issue 13: the outcome KPIs, persisted with the tickets.
    "tickets_kpi_window_days": "gauge", "tickets_resolutions": "gauge",
    "tickets_re_reported": "gauge", "tickets_eradication_rate": "gauge",
    "tickets_eradication_checked": "gauge", "tickets_eradicated": "gauge",
    "tickets_mean_time_to_respond_seconds": "gauge", "tickets_responses": "gauge",
    "tickets_mean_time_to_resolve_seconds": "gauge", "tickets_resolved": "gauge",
    "tickets_resolve_sla_rate": "gauge", "tickets_first_time_fix_rate": "gauge",
    "tickets_overdue_share": "gauge", "tickets_overdue": "gauge", "tickets_unattended": "gauge",
    "tickets_escalations": "counter", "tickets_open_by_age": "gauge",
    "tickets_quality_repeats": "gauge",
    "tickets_open_by_priority": "gauge", "conditions_flagged": "gauge", "flood_active": "gauge",
}  # fmt: skip
PROCESS_FAMILIES = {
    "process_cpu_seconds": "counter", "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge", "process_start_time_seconds": "gauge",
    "process_open_fds": "gauge", "python_info": "gauge",
}  # fmt: skip
DEVICES = ("pump-1", "pump-2", "pump-3")
# Numbers of the status document that are not metrics, and why.
NOT_METRICS = {
    ("devices", "last_error"),  # text; its count is device_errors
    ("tickets", "advisories"),  # text notes with their time stamps
}


def families(text: str) -> dict[str, Any]:
    parsed = list(text_string_to_metric_families(text))
    names = [family.name for family in parsed]
    assert len(names) == len(set(names)), "a family is declared twice"
    return {family.name: family for family in parsed}


def write_site(folder: Path, modbus_port: int, health_port: int) -> Path:
    (folder / "devices").mkdir(parents=True)
    (folder / "gateway.yaml").write_text(
        "site: plant-m\ngateway_id: edge-m\n"
        f"uplink: {{host: 127.0.0.1, port: {free_loopback_port()}}}\n"
        f"health: {{port: {health_port}}}\n"
        f"storage: {{directory: {folder / 'var'}}}\n"
    )
    for device in DEVICES:
        # pump-1 answers (the pump simulator); the other two are free ports nobody serves.
        port = modbus_port if device == "pump-1" else free_loopback_port()
        (folder / "devices" / f"{device}.yaml").write_text(
            f"id: {device}\n"
            f"connection: {{protocol: modbus_tcp, host: 127.0.0.1, port: {port}, timeout_s: 0.1}}\n"
            "poll_period_s: 0.2\n"
            "points: [{name: bearing_temp, address: 0, scale: 0.1, unit: degC}]\n"
        )
    return folder / "gateway.yaml"


@pytest.fixture
async def scraped(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """/metrics and /status of a running gateway with one device up and two down."""
    modbus_port, health_port = free_loopback_port(), free_loopback_port()
    gateway_yaml = write_site(tmp_path / "site", modbus_port, health_port)
    pump, pump_stop = await start_pump(modbus_port)
    stop = asyncio.Event()
    gateway = asyncio.create_task(
        Gateway(load_config(gateway_yaml), SystemClock()).run(stop), name="gateway"
    )
    try:
        status: dict[str, Any] = {}

        async def refresh() -> None:
            code, body = await http_get(health_port, "/status")
            status.update(json.loads(body) if code == 200 else {})

        async def settled() -> bool:
            try:
                await refresh()
            except OSError:
                return False
            devices = {d["device"]: d for d in status.get("devices", [])}
            return (
                len(devices) == 3 and devices["pump-1"]["polls"] > 0
                and all(devices[d]["errors"] > 0 for d in ("pump-2", "pump-3"))
            )  # fmt: skip

        async with asyncio.timeout(20):
            while True:
                if await settled():
                    break
                await asyncio.sleep(0.05)
        code, metrics = await http_get(health_port, "/metrics")
        assert code == 200
        await refresh()
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 15)
        await stop_task(pump, pump_stop)
    return metrics, status


async def test_every_family_is_typed_once_with_every_device(scraped) -> None:
    metrics, _ = scraped
    found = families(metrics)
    ours = {name.removeprefix("edge_gateway_"): f.type for name, f in found.items()
            if name.startswith("edge_gateway_")}  # fmt: skip
    assert ours == GATEWAY_FAMILIES
    for name, kind in PROCESS_FAMILIES.items():
        assert found[name].type == kind, name
    assert "unknown" not in {f.type for f in found.values()}

    def by_device(family: str) -> dict[str, float]:
        return {s.labels["device"]: s.value for s in found[f"edge_gateway_{family}"].samples}

    for family in ("device_polls", "device_errors", "device_reconnects", "device_up"):
        assert set(by_device(family)) == set(DEVICES), family
    assert by_device("device_up") == {"pump-1": 1.0, "pump-2": 0.0, "pump-3": 0.0}
    assert by_device("device_polls")["pump-1"] > 0
    assert set(by_device("device_poll_latency_seconds")) == {"pump-1"}  # no poll, no latency
    (build,) = found["edge_gateway_build_info"].samples
    assert build.name == "edge_gateway_build_info" and build.value == 1.0
    assert build.labels["version"] == gateway.__version__
    assert found["process_resident_memory_bytes"].samples[0].value > 1e6


async def test_every_number_of_the_status_document_is_a_metric(scraped) -> None:
    """Each number `status --json` shows (and `status` prints) must reach Prometheus. The
    real document's numbers are replaced by distinct values, so each can be found again."""
    _, status = scraped
    unique = itertools.count(1001)
    paths: dict[float, tuple[str, ...]] = {}

    def mark(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            return {k: mark(v, (*path, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [mark(item, path) for item in node]
        if path[-1:] in (("device",), ("time",), ("site",), ("gateway",)) or path in NOT_METRICS:
            return node
        if isinstance(node, bool | int | float) or node is None:
            value = float(next(unique))
            paths[value] = path
            return value
        return node

    marked = mark(copy.deepcopy(status), ())
    assert len(paths) > 60, "the document has the shape of a real report"
    exported = {s.value for f in families(render_metrics(marked).decode()).values()
                for s in f.samples}  # fmt: skip
    missing = sorted({paths[v] for v in paths if v not in exported})
    assert missing == [], f"numbers of the status document missing from /metrics: {missing}"


def test_labelled_families_group_their_samples(tmp_path: Path) -> None:
    """The report of the issue: with a second device the old exposition repeated no TYPE line
    and a parser typed the second device's series as `unknown`."""
    report = copy.deepcopy(REPORT)
    report["devices"].append({**report["devices"][0], "device": "pump-2", "up": False})
    report["devices"][0]["up"] = True
    found = families(render_metrics(report).decode())
    polls = found["edge_gateway_device_polls"]
    assert polls.type == "counter"
    assert [(s.name, s.labels) for s in polls.samples] == [
        ("edge_gateway_device_polls_total", {"device": "pump-1"}),
        ("edge_gateway_device_polls_total", {"device": "pump-2"}),
    ]
    drops = found["edge_gateway_drops"].samples
    labels = {"reason": "outbox_full", "kind": "health"}
    assert Sample("edge_gateway_drops_total", labels, 5.0) in drops
