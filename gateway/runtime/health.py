"""Health and metrics (issue 6, "Service"): one report, three views.

- `HealthReport.collect()` gathers the `statistics()` of every long-lived object into one plain
  JSON document: per-device polls, errors and latency, queue depth, detector time, uplink
  reconnects, outbox depth and oldest age, drops by reason, telemetry, and the residency
  figures (bytes acquired from devices, bytes sent off-site per message type).
- `HealthServer` serves it on a local address: `GET /healthz` (the event loop answers),
  `/readyz` (started and not stopping), `/metrics` (Prometheus text format 0.0.4) and
  `/status` (the JSON document, read by `edge-gateway status`). Standard library asyncio only.
- `run_health_topic` commits the same document to the outbox every period, for the MQTT
  `health` topic (droppable: shed first when the outbox is over its size).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.clock import Clock
from gateway.core.interfaces import Outbox
from gateway.pipeline.runner import DetectorRunner
from gateway.pipeline.source import PollingSource, SharedLineSource, SourceStatistics
from gateway.pipeline.stream import StreamingSource, StreamStatistics
from gateway.store import TelemetryStore
from uplink.service import Uplink

log = logging.getLogger(__name__)

Source = PollingSource | StreamingSource | SharedLineSource
MAX_REQUEST_BYTES = 8 * 1024
REQUEST_TIMEOUT_S = 5.0
_MAX_ERROR_CHARS = 200


@dataclass
class HealthReport:
    """What the report reads; `ready` is flipped by the app once the sources run."""

    site: str
    gateway: str
    clock: Clock
    sources: Sequence[Source]
    runner: DetectorRunner
    uplink: Uplink
    outbox: Outbox
    telemetry: TelemetryStore
    outbox_max_messages: int
    started_at: float = field(default=0.0)
    ready: bool = False
    timestamp: Callable[[float], str] = field(default=lambda ts: f"{ts:.3f}")
    # Ticketing KPIs (issue 5): conditions per area, floods, chattering, SLA, repeat rate.
    ticket_kpis: Callable[[], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.started_at:
            self.started_at = self.clock.now()

    async def collect(self) -> dict[str, Any]:
        now = self.clock.now()
        runner = self.runner.statistics()
        uplink = self.uplink.statistics()
        telemetry = self.telemetry.statistics()
        by_kind, oldest = await self.outbox.backlog()
        drops = dict(uplink.drops)
        if telemetry.samples_refused:
            drops["telemetry_refused:samples"] = telemetry.samples_refused
        if telemetry.waveforms_refused:
            drops["telemetry_refused:waveforms"] = telemetry.waveforms_refused
        return {
            "site": self.site,
            "gateway": self.gateway,
            "time": self.timestamp(now),
            "uptime_s": round(now - self.started_at, 3),
            "ready": self.ready,
            "devices": [device for source in self.sources for device in _devices(source)],
            "pipeline": {
                "queue_depth": runner.queue_depth,
                "records": runner.records,
                "samples_stored": runner.samples_stored,
                "waveforms": runner.waveforms,
                "findings": runner.findings,
                "detectors_disabled": runner.detectors_disabled,
                "detector_seconds": round(runner.detector_seconds, 6),
            },
            "uplink": {
                "connected": uplink.connected,
                "connects": uplink.connects,
                "reconnects": max(0, uplink.connects - 1),
                "connection_losses": uplink.connection_losses,
                "published": uplink.published,
                "resent": uplink.resent,
                "publish_failures": uplink.publish_failures,
                "half_open_aborts": uplink.half_open_aborts,
                "acks": uplink.acks,
                "commands": uplink.commands,
                "rejected_commands": uplink.rejected_commands,
                "rate_limited_commands": uplink.rate_limited,
                "busy_commands": uplink.busy,
                "failed_commands": uplink.command_failures,
            },
            "outbox": {
                "depth": sum(by_kind.values()),
                "by_kind": by_kind,
                "oldest_age_s": round(now - oldest, 3) if oldest is not None else None,
                "max_messages": self.outbox_max_messages,
            },
            "drops": drops,
            **({"tickets": self.ticket_kpis()} if self.ticket_kpis is not None else {}),
            "telemetry": {
                "samples_written": telemetry.samples_written,
                "waveforms_written": telemetry.waveforms_written,
                "samples_refused": telemetry.samples_refused,
                "waveforms_refused": telemetry.waveforms_refused,
                "rows_pruned": telemetry.rows_pruned,
                "rows_trimmed_for_size": telemetry.rows_trimmed_for_size,
                "refusing": telemetry.refusing,
            },
            "residency": {
                "acquired_bytes": telemetry.bytes_acquired,
                "sent_bytes": dict(uplink.bytes_sent),
                "sent_messages": dict(uplink.messages_sent),
                "refused_by_guard": dict(self.uplink.guard.statistics().refused),
            },
        }


def _devices(source: Source) -> list[dict[str, Any]]:
    if isinstance(source, SharedLineSource):
        return [
            {
                "device": unit.device,
                "state": "degraded" if unit.degraded else "polling",
                "polls": unit.polls,
                "errors": unit.errors,
                "reconnects": 0,
                "latency_s": None,
                "last_error": None,
            }
            for unit in source.statistics()
        ]
    if isinstance(source, PollingSource):
        polled = source.statistics()
        stats: SourceStatistics | StreamStatistics = polled
        polls, latency = polled.polls, polled.last_latency_s
    else:
        streamed = source.statistics()
        stats = streamed
        polls, latency = streamed.records, None  # a stream has no poll round trip
    last_error = stats.last_error[:_MAX_ERROR_CHARS] if stats.last_error else None
    return [
        {
            "device": stats.device,
            "state": str(stats.state),
            "polls": polls,
            "errors": stats.errors,
            "reconnects": stats.reconnects,
            "latency_s": round(latency, 6) if latency is not None else None,
            "last_error": last_error,
        }
    ]


# --- Prometheus text format -------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


class _Exposition:
    def __init__(self) -> None:
        self._lines: list[str] = []
        self._declared: set[str] = set()

    def add(
        self,
        name: str,
        kind: str,
        help_text: str,
        value: float | int | bool | None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if value is None:
            return
        metric = f"edge_gateway_{name}"
        if metric not in self._declared:
            self._declared.add(metric)
            self._lines.append(f"# HELP {metric} {help_text}")
            self._lines.append(f"# TYPE {metric} {kind}")
        self._lines.append(f"{metric}{_labels(labels or {})} {float(value):.10g}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render_metrics(report: Mapping[str, Any]) -> str:
    """The report as Prometheus metrics; names follow `edge_gateway_<what>_<unit>`."""
    out = _Exposition()
    out.add("up", "gauge", "1 while the daemon answers.", 1)
    out.add("ready", "gauge", "1 once the sources run.", bool(report["ready"]))
    out.add("uptime_seconds", "gauge", "Seconds since start.", report["uptime_s"])
    for device in report["devices"]:
        labels = {"device": device["device"]}
        out.add("device_polls_total", "counter", "Successful reads per device.",
                device["polls"], labels)  # fmt: skip
        out.add("device_errors_total", "counter", "Failed connects and reads per device.",
                device["errors"], labels)  # fmt: skip
        out.add("device_reconnects_total", "counter", "Recoveries after a device was "
                "unreachable.", device["reconnects"], labels)  # fmt: skip
        out.add("device_poll_latency_seconds", "gauge", "Duration of the last poll.",
                device["latency_s"], labels)  # fmt: skip
        out.add("device_up", "gauge", "1 while the device answers.",
                device["state"] in ("polling", "streaming"), labels)  # fmt: skip
    pipeline = report["pipeline"]
    out.add("queue_depth", "gauge", "Records waiting for the detectors.", pipeline["queue_depth"])
    out.add("records_total", "counter", "Records taken from the queue.", pipeline["records"])
    out.add("findings_total", "counter", "Findings raised or cleared.", pipeline["findings"])
    out.add("detector_seconds_total", "counter", "Time spent in detectors.",
            pipeline["detector_seconds"])  # fmt: skip
    out.add("detectors_disabled", "gauge", "Detectors disabled after a failure.",
            pipeline["detectors_disabled"])  # fmt: skip
    uplink = report["uplink"]
    out.add("uplink_connected", "gauge", "1 while connected to the broker.", uplink["connected"])
    out.add("uplink_reconnects_total", "counter", "Connections after the first.",
            uplink["reconnects"])  # fmt: skip
    out.add("uplink_connection_losses_total", "counter", "Broker connections lost.",
            uplink["connection_losses"])  # fmt: skip
    out.add("uplink_half_open_aborts_total", "counter", "Links dropped for a missing PUBACK.",
            uplink["half_open_aborts"])  # fmt: skip
    out.add("uplink_published_total", "counter", "Outbox items acknowledged by the broker.",
            uplink["published"])  # fmt: skip
    out.add("uplink_resent_total", "counter", "Ticket messages resent with the same id.",
            uplink["resent"])  # fmt: skip
    out.add("uplink_central_acks_total", "counter", "Central acks accepted.", uplink["acks"])
    outbox = report["outbox"]
    out.add("outbox_depth", "gauge", "Unsettled outbox messages.", outbox["depth"])
    for kind, count in sorted(outbox["by_kind"].items()):
        out.add("outbox_depth_by_kind", "gauge", "Unsettled outbox messages by type.", count,
                {"kind": kind})  # fmt: skip
    out.add("outbox_oldest_age_seconds", "gauge", "Age of the oldest unsettled message.",
            outbox["oldest_age_s"] if outbox["oldest_age_s"] is not None else 0)  # fmt: skip
    for key, count in sorted(report["drops"].items()):
        reason, _, kind = key.partition(":")
        out.add("drops_total", "counter", "Messages or rows dropped, by reason and type.", count,
                {"reason": reason, "kind": kind})  # fmt: skip
    telemetry = report["telemetry"]
    out.add("telemetry_samples_written_total", "counter", "Samples stored in telemetry.db.",
            telemetry["samples_written"])  # fmt: skip
    out.add("telemetry_rows_pruned_total", "counter", "Rows deleted by age.",
            telemetry["rows_pruned"])  # fmt: skip
    out.add("telemetry_rows_trimmed_total", "counter", "Rows deleted for size.",
            telemetry["rows_trimmed_for_size"])  # fmt: skip
    residency = report["residency"]
    out.add("bytes_in_total", "counter", "Value bytes acquired from devices (8 per value).",
            residency["acquired_bytes"])  # fmt: skip
    for kind, count in sorted(residency["sent_bytes"].items()):
        out.add("bytes_out_total", "counter", "Payload bytes sent off-site, by message type.",
                count, {"kind": kind})  # fmt: skip
    return out.text()


# --- HTTP ------------------------------------------------------------------------------------

_REQUEST_LINE = re.compile(rb"^(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.[01]\r?$")


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    reason: str
    content_type: str
    body: bytes


class HealthServer:
    """A tiny HTTP/1.1 server: GET only, one request per connection, bounded reads."""

    def __init__(
        self,
        collect: Callable[[], Awaitable[dict[str, Any]]],
        ready: Callable[[], bool],
        host: str,
        port: int,
    ) -> None:
        self._collect = collect
        self._ready = ready
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.requests = 0

    async def start(self) -> None:
        """Bind; raises `OSError` when the address is taken (a configuration problem)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("Health endpoints on `http://%s:%d/` (healthz, readyz, metrics, status).",
                 self.host, self.port)  # fmt: skip

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            response = await self._respond(reader)
            head = (
                f"HTTP/1.1 {response.status} {response.reason}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + response.body)
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.debug("Health request dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if task is not None:
                self._handlers.discard(task)

    async def _respond(self, reader: asyncio.StreamReader) -> _Response:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                return _text(431, "Request Header Fields Too Large", "request too large\n")
        if len(head) > MAX_REQUEST_BYTES:
            return _text(431, "Request Header Fields Too Large", "request too large\n")
        match = _REQUEST_LINE.match(head.split(b"\n", 1)[0])
        if match is None:
            return _text(400, "Bad Request", "bad request\n")
        if match["method"] != b"GET":
            return _text(405, "Method Not Allowed", "GET only\n")
        self.requests += 1
        path = match["path"].split(b"?", 1)[0].decode("ascii", "replace")
        if path == "/healthz":
            return _text(200, "OK", "ok\n")
        if path == "/readyz":
            if self._ready():
                return _text(200, "OK", "ready\n")
            return _text(503, "Service Unavailable", "not ready\n")
        if path == "/metrics":
            body = render_metrics(await self._collect()).encode()
            return _Response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body)
        if path == "/status":
            body = json.dumps(await self._collect(), indent=1).encode()
            return _Response(200, "OK", "application/json", body)
        return _text(404, "Not Found", "try /healthz, /readyz, /metrics or /status\n")


def _text(status: int, reason: str, body: str) -> _Response:
    return _Response(status, reason, "text/plain; charset=utf-8", body.encode())


async def run_health_topic(
    collect: Callable[[], Awaitable[dict[str, Any]]],
    publish: Callable[[dict[str, Any]], Awaitable[bool]],
    period_s: float,
) -> None:
    """Every `period_s`, the report goes to the outbox for the MQTT `health` topic."""
    while True:
        await asyncio.sleep(period_s)
        await publish(await collect())
