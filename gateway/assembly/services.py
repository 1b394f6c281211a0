"""The runtime services beside the pipeline, as named coroutines for the run loop: telemetry
retention and flushing, the `health` and `summaries/<asset>` topics, and the local health
endpoints."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.config.loader import LoadedConfig
from gateway.core.clock import Clock
from gateway.core.records import OutboxKind
from gateway.runtime.health import HealthReport, HealthServer, run_health_topic
from gateway.runtime.summaries import SummaryCollector, run_summaries
from gateway.store import TelemetryStore
from uplink.events import Topics, rfc3339
from uplink.service import Uplink

log = logging.getLogger("gateway")

# A service to start as a task of this name; built only when started, so that a failure while
# assembling leaves no coroutine behind that was never awaited.
Service = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


def telemetry_services(
    loaded: LoadedConfig, telemetry: TelemetryStore, clock: Clock
) -> list[Service]:
    storage = loaded.gateway.storage
    return [
        (
            "retention",
            lambda: telemetry.run_retention(
                clock,
                max_age_s=storage.telemetry_retention_h * 3600.0,
                max_bytes=int(storage.telemetry_max_mb * 1e6),
                period_s=storage.retention_check_s,
            ),
        ),
        ("telemetry-flush", telemetry.run_flusher),
    ]


def topic_services(
    loaded: LoadedConfig,
    uplink: Uplink,
    topics: Topics,
    health: HealthReport,
    summaries: SummaryCollector,
    clock: Clock,
) -> list[Service]:
    """The `health` topic and `summaries/<asset>`, each only when its period is set. Both are
    best effort: the outbox may drop them oldest-first, never a ticket message."""
    cfg = loaded.gateway
    services: list[Service] = []
    if cfg.uplink.health_period_s is not None:

        async def publish_health(document: dict[str, Any]) -> bool:
            return await uplink.enqueue_droppable(OutboxKind.HEALTH, topics.health, document)

        period = cfg.uplink.health_period_s
        services.append(
            ("health", lambda: run_health_topic(health.collect, publish_health, period))
        )
    if cfg.uplink.summary_period_s is not None:

        async def publish_summary(asset: str, document: dict[str, Any]) -> bool:
            return await uplink.enqueue_droppable(
                OutboxKind.SUMMARY, topics.summary(asset), document
            )

        summary_period = cfg.uplink.summary_period_s

        def summaries_task() -> Coroutine[Any, Any, None]:
            return run_summaries(
                summaries,
                publish_summary,
                clock,
                site=cfg.site,
                gateway=cfg.gateway_id,
                period_s=summary_period,
                timestamp=rfc3339,
            )

        services.append(("summaries", summaries_task))
    return services


async def start_health_server(loaded: LoadedConfig, health: HealthReport) -> HealthServer | None:
    """Off unless `health.port` is set. An address that cannot be bound costs the endpoints,
    not the plant: polling, tickets and the uplink go on."""
    address = loaded.gateway.health
    if address.port is None:
        return None
    server = HealthServer(health.collect, lambda: health.ready, address.host, address.port)
    try:
        await server.start()
    except OSError as exc:
        log.error(
            "Health endpoints not available: cannot listen on `%s:%d`: %s",
            address.host,
            address.port,
            exc,
        )
        return None
    return server
