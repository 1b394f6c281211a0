"""Everything the daemon runs for one configuration, built from the sink end: the stores,
ticketing, the uplink, the detectors and their runner, the runtime services, and last the
sources. `gateway.app` starts the result in that order and stops it in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.assembly import plant
from gateway.assembly.detectors import build_detectors
from gateway.assembly.services import (
    Service,
    start_health_server,
    telemetry_services,
    topic_services,
)
from gateway.assembly.site import SitePage, start_site_page
from gateway.assembly.ticketing import ticket_commands, ticket_service
from gateway.assembly.uplink import ticket_encoder, topics, uplink_settings
from gateway.config.loader import LoadedConfig
from gateway.core.clock import Clock
from gateway.core.interfaces import Detector, QueueItem
from gateway.core.records import Finding, Sample, Waveform
from gateway.pipeline.record_queue import RecordQueue
from gateway.pipeline.runner import DetectorRunner
from gateway.pipeline.sources import Source, build_sources
from gateway.runtime.detector_state import (
    restore_detector_state,
    resume_conditions,
    run_detector_state_saver,
)
from gateway.runtime.health import HealthReport
from gateway.runtime.summaries import SummaryCollector
from gateway.store import StateDatabase, TelemetryStore
from gateway.store.snapshots import DetectorSnapshots
from uplink.events import rfc3339
from uplink.service import Uplink

log = logging.getLogger(__name__)

# Records between the sources and the detector runner: when full, sources wait (DESIGN.md 3).
QUEUE_SIZE = 10_000


@dataclass
class Daemon:
    """The running objects of one configuration, not yet started."""

    sinks: Sequence[Service]  # started first, stopped last
    runner: DetectorRunner
    sources: Sequence[Source]  # started last, stopped first
    detectors: Sequence[Detector]
    snapshots: DetectorSnapshots
    health: HealthReport

    @property
    def status(self) -> str:
        site = self.health
        return (
            f"Gateway `{site.gateway}` of site `{site.site}` running: "
            f"{len(self.sources)} devices, {len(self.detectors)} detectors."
        )


async def assemble(loaded: LoadedConfig, clock: Clock, stack: contextlib.AsyncExitStack) -> Daemon:
    """Open the stores (closed by `stack`) and build everything on them."""
    for warning in loaded.warnings:  # check-config printed them; the journal keeps them
        log.warning("Configuration warning: %s", warning)
    cfg = loaded.gateway
    state_dir = loaded.state_directory
    state_dir.mkdir(parents=True, exist_ok=True)
    state = await StateDatabase.open(
        state_dir / "state.db",
        command_window_s=cfg.ticketing.command_log_window_h * 3600.0,
        command_log_max=cfg.ticketing.command_log_max,
    )
    stack.push_async_callback(state.close)
    telemetry = await TelemetryStore.open(
        state_dir / "telemetry.db", flush_interval_s=cfg.storage.telemetry_flush_s
    )
    stack.push_async_callback(telemetry.close)  # writes the samples still held

    devices = plant.configured_devices(loaded.devices, loaded.protocols)
    detectors = build_detectors(devices, loaded.rules)
    tickets = ticket_service(
        loaded, devices, detectors, state, ticket_encoder(loaded, state.outbox.next_sequence), clock
    )
    await tickets.start()
    commands = ticket_commands(loaded, tickets, state, clock)

    # The outbox signals its own commits: what a command or a finding changed is published
    # as soon as it is committed.
    uplink = Uplink(
        uplink_settings(loaded), state.outbox, commands.handle, clock, on_acks=commands.handle_many
    )

    # Summaries are off unless their period is set: then no sample is looked at for them (at
    # 15 000 samples/s looking at them costs a tenth of the daemon's CPU), and no map of
    # every tag to its asset is held for them (0.4 MB at 15 000 tags).
    summarising = cfg.uplink.summary_period_s is not None
    # Features per asset for `summaries/<asset>`, never the samples.
    summaries = SummaryCollector(plant.asset_of_tags(devices) if summarising else {})

    site: SitePage | None = None  # the local site page, when enabled (started below)

    async def on_finding(finding: Finding) -> None:
        summaries.add_finding(finding)
        await tickets.on_finding(finding)
        if site is not None:
            await site.recorder.after_finding(finding)  # the spectrum a ticket opened on

    async def store_samples(samples: Sequence[Sample]) -> None:
        if summarising:
            summaries.add_samples(samples)
        if site is not None:
            site.live.add(samples)
        await telemetry.write_samples(samples)
        await tickets.observe_samples(samples)  # run states, links, evidence

    async def store_waveform(waveform: Waveform) -> None:
        if summarising:
            summaries.add_waveform(waveform)
        await telemetry.write_waveform(waveform)

    queue: asyncio.Queue[QueueItem] = RecordQueue(maxsize=QUEUE_SIZE)
    snapshots = DetectorSnapshots(state_dir / "detectors")
    restore_detector_state(detectors, snapshots)
    failed_before = resume_conditions(detectors, tickets.conditions_to_resume())
    runner = DetectorRunner(
        queue, detectors, on_finding, store_samples, clock, store_waveform=store_waveform
    )
    runner.resume_failed(failed_before)
    sources = build_sources(plant.endpoints(devices, clock), queue, clock)
    health = HealthReport(
        cfg.site,
        cfg.gateway_id,
        clock,
        sources,
        runner,
        uplink,
        state.outbox,
        telemetry,
        outbox_max_messages=cfg.uplink.outbox_max_messages,
        timestamp=rfc3339,
        ticket_kpis=tickets.kpis,
    )
    health_server = await start_health_server(loaded, health)
    if health_server is not None:
        stack.push_async_callback(health_server.close)
    site = await start_site_page(
        loaded,
        clock,
        health=health,
        devices=devices,
        detectors=detectors,
        telemetry=telemetry,
        state=state,
        tickets=tickets,
    )
    if site is not None:
        stack.push_async_callback(site.server.close)
    sinks: list[Service] = [
        ("uplink", uplink.run_uplink),
        ("detectors", runner.run_detectors),
        *telemetry_services(loaded, telemetry, clock),
        *topic_services(loaded, uplink, topics(loaded), health, summaries, clock),
        ("ticketing.timers", tickets.run_timers),
        ("detectors.state", lambda: run_detector_state_saver(detectors, snapshots)),
    ]
    return Daemon(sinks, runner, sources, detectors, snapshots, health)
