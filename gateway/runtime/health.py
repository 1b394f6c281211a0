"""Health and metrics: one report, three views.

- `HealthReport.collect()` gathers the `statistics()` of every long-lived object into one plain
  JSON document: per-device polls, errors and latency, queue depth, detector time, uplink
  reconnects, outbox depth and oldest age, drops by reason, telemetry, and the residency
  figures (bytes acquired from devices, bytes sent off-site per message type).
- `HealthServer` serves it on a local address: `GET /healthz` (the event loop answers),
  `/readyz` (started and not stopping), `/metrics` (Prometheus exposition format, rendered by
  `gateway/runtime/metrics.py`) and `/status` (the JSON document, read by
  `edge-gateway status`). Standard library asyncio only.
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
from gateway.core.plugins import Lazy
from gateway.pipeline.runner import DetectorRunner
from gateway.pipeline.sources import Source
from gateway.pipeline.statistics import SourceState
from gateway.store import TelemetryStore
from uplink.service import Uplink

# prometheus_client is loaded by the first scrape, not by every daemon (most sites never
# scrape the gateway itself).
_RENDER_METRICS: Lazy[Callable[[Mapping[str, Any]], bytes]] = Lazy(
    "gateway.runtime.metrics:render_metrics"
)
_METRICS_CONTENT_TYPE: Lazy[str] = Lazy("gateway.runtime.metrics:CONTENT_TYPE")

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8 * 1024
REQUEST_TIMEOUT_S = 5.0
_MAX_ERROR_CHARS = 200
_MAX_POINTS_NAMED = 50  # per device and list: the document stays small on a big device


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
    # Ticketing KPIs: conditions per area, floods, chattering, SLA, repeat rate.
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
    return [
        {
            "device": stats.device,
            "state": str(stats.state),
            "up": stats.state in (SourceState.POLLING, SourceState.STREAMING),
            "polls": stats.reads,
            "errors": stats.errors,
            "reconnects": stats.reconnects,
            "latency_s": (
                round(stats.last_latency_s, 6) if stats.last_latency_s is not None else None
            ),
            "last_error": stats.last_error[:_MAX_ERROR_CHARS] if stats.last_error else None,
            # Point quality: samples counted inside good reads, the points not GOOD named.
            "bad_samples": stats.bad_values,
            "uncertain_samples": stats.uncertain_values,
            "bad_points": list(stats.bad_points[:_MAX_POINTS_NAMED]),
            "uncertain_points": list(stats.uncertain_points[:_MAX_POINTS_NAMED]),
            "silent_points": list(stats.silent_points[:_MAX_POINTS_NAMED]),
        }
        for stats in source.statistics()
    ]


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
            body = _RENDER_METRICS.get()(await self._collect())
            return _Response(200, "OK", _METRICS_CONTENT_TYPE.get(), body)
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
