"""Composition root: the one place that names concrete drivers, detectors, stores and the uplink.

Start order is from the sink end (stores, uplink, ticketing, detectors, sources); stop order is
from the source end, draining what is queued, within a deadline (DESIGN.md section 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detectors.threshold import ThresholdDetector
from gateway.config.loader import LoadedConfig, load_config
from gateway.config.models import (
    DeviceConfig,
    GatewayConfig,
    ThresholdRule,
    TicketingConfig,
    VibrationRule,
)
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import ConfigError
from gateway.core.exit_codes import EX_CONFIG
from gateway.core.interfaces import (
    Detector,
    MessageEncoder,
    PollingDriver,
    Record,
    StreamingDriver,
)
from gateway.core.records import Finding, OutboxKind, Sample, Tag, TagKind, Waveform
from gateway.pipeline.runner import DetectorRunner
from gateway.pipeline.source import PollingSource, SharedLineSource, stagger_phases
from gateway.pipeline.stream import StreamingSource
from gateway.runtime.detector_state import (
    restore_detector_state,
    run_detector_state_saver,
    save_detector_state,
)
from gateway.runtime.health import HealthReport, HealthServer, run_health_topic
from gateway.runtime.lifecycle import run_until_stopped
from gateway.runtime.summaries import SummaryCollector, run_summaries
from gateway.store import StateDatabase, TelemetryStore
from gateway.store.snapshots import DetectorSnapshots
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.knowledge import KnowledgeBase
from gateway.ticketing.policy import AssetProfile, LifecyclePolicy, SlaTarget
from gateway.ticketing.service import TicketService
from gateway.ticketing.topology import Link
from gateway.ticketing.verification import vibration_feature_tags
from protocols.can.config import CanConnection
from protocols.modbus.config import ModbusPoint, ModbusRtuConnection, ModbusTcpConnection
from protocols.modbus.line import group_rtu_devices
from protocols.opcua.config import OpcUaConnection
from uplink.events import Topics, make_ticket_encoder, rfc3339
from uplink.mqtt import TlsSettings
from uplink.service import Uplink, UplinkSettings

# Protocol libraries and the vibration family (scipy) are imported by the builders that need
# them, so that a site without OPC UA, CAN or vibration rules never loads asyncua, python-can,
# cantools or scipy: at import they cost about 50 MB of RSS (issue 3, <= 80 MB for 500 devices).
if TYPE_CHECKING:
    from detectors.vibration.bearing import BearingGeometry
    from detectors.vibration.catalogue import BearingCatalogue
    from detectors.vibration.detector import VibrationDetector
    from protocols.modbus.driver import ModbusRtuLine

log = logging.getLogger("gateway")

QUEUE_SIZE = 10_000
STOP_DEADLINE_S = 10.0


def device_tags(device: DeviceConfig, units: dict[str, str] | None = None) -> list[Tag]:
    """Tags of a device. Drivers deliver engineering units, so scale and offset are informative."""
    units = units or {}
    if device.points:
        return [
            Tag(
                id=device.tag_id(point.name),
                asset=device.asset_id,
                unit=point.unit,
                kind=modbus_tag_kind(point),
                scale=point.scale,
                offset=point.offset,
            )
            for point in device.points
            if point.type != "string"  # text is not a Sample value (the driver's texts())
        ]
    if device.nodes:
        return [
            Tag(
                id=device.tag_id(node.name),
                asset=device.asset_id,
                unit=node.unit,
                kind=TagKind.WAVEFORM if node.kind == "waveform" else TagKind.SCALAR,
                scale=node.scale,
                offset=node.offset,
            )
            for node in device.nodes
        ]
    return [
        Tag(
            id=device.tag_id(signal.name),
            asset=device.asset_id,
            unit=signal.unit or units.get(device.tag_id(signal.name), ""),
        )
        for signal in device.signals
    ]


def modbus_tag_kind(point: ModbusPoint) -> TagKind:
    if point.waveform is not None:
        return TagKind.WAVEFORM
    return TagKind.STATE if point.enum else TagKind.SCALAR


Source = PollingSource | StreamingSource | SharedLineSource


def build_sources(
    devices: Sequence[tuple[Path, DeviceConfig]], queue: asyncio.Queue[Record], clock: Clock
) -> list[Source]:
    """One task per endpoint: a device on its own connection, or a whole RTU line."""
    sources: list[Source] = []
    rtu: list[tuple[DeviceConfig, ModbusRtuConnection]] = []
    by_period: dict[float, list[str]] = {}
    for _, device in devices:
        by_period.setdefault(device.poll_period_s, []).append(device.id)
    # Devices sharing a period do not all fire at the same instant (issue 3, poll stagger).
    phases = {
        device_id: phase
        for period, ids in by_period.items()
        for device_id, phase in stagger_phases(ids, period).items()
    }
    for device_file, device in devices:
        if isinstance(device.connection, ModbusRtuConnection):
            rtu.append((device, device.connection))
        else:
            sources.append(build_source(device, device_file, queue, clock, phases[device.id]))
    by_id = {device.id: (device, conn) for device, conn in rtu}
    for group in group_rtu_devices((device.id, conn) for device, conn in rtu):
        members = [by_id[device_id] for device_id in group.device_ids]
        sources.append(rtu_line_source(group.port, group.line_id, members, queue, clock))
    return sources


def rtu_line_source(
    port: str,
    line_id: str,
    members: Sequence[tuple[DeviceConfig, ModbusRtuConnection]],
    queue: asyncio.Queue[Record],
    clock: Clock,
) -> SharedLineSource:
    from protocols.modbus.driver import ModbusRtuLine, log_read_plan

    units = [(device.id, conn, device.points, device_tags(device)) for device, conn in members]
    for device, conn in members:
        log_read_plan(device.id, device.points, conn)

    def line() -> ModbusRtuLine:
        return ModbusRtuLine(port, units, clock)

    periods = {device.id: device.poll_period_s for device, _ in members}
    return SharedLineSource(
        line_id, line, queue, clock, periods_s=periods, default_period_s=min(periods.values())
    )


def build_source(
    device: DeviceConfig,
    device_file: Path,
    queue: asyncio.Queue[Record],
    clock: Clock,
    phase_s: float = 0.0,
) -> PollingSource | StreamingSource:
    """The source task for one device: polling for Modbus, streaming for OPC UA and CAN."""
    conn = device.connection
    if isinstance(conn, ModbusTcpConnection):
        from protocols.modbus.driver import ModbusTcpDriver, log_read_plan

        tags = device_tags(device)
        log_read_plan(device.id, device.points, conn)

        def modbus() -> PollingDriver:
            return ModbusTcpDriver(device.id, conn, device.points, tags, clock)

        return PollingSource(
            device_id=device.id,
            driver_factory=modbus,
            queue=queue,
            clock=clock,
            period_s=device.poll_period_s,
            # Bounds a whole connect or poll, which may be several requests.
            timeout_s=device.poll_period_s,
            phase_s=phase_s,
        )
    if isinstance(conn, OpcUaConnection):
        from protocols.opcua.driver import OpcUaDriver

        tags = device_tags(device)

        def opcua() -> StreamingDriver:
            return OpcUaDriver(
                device.id, conn, device.nodes, tags, clock, poll_period_s=device.poll_period_s
            )

        return StreamingSource(device.id, opcua, queue, clock)
    if not isinstance(conn, CanConnection):
        raise TypeError(f"device `{device.id}`: {conn.protocol} is served by its line's source")
    from protocols.can.dbc import signal_units
    from protocols.can.driver import CanDriver

    dbc_path = (device_file.parent / conn.dbc).resolve()
    units = signal_units(dbc_path, device.signals, device_id=device.id)
    tags = device_tags(device, units)

    def can() -> StreamingDriver:
        return CanDriver(device.id, conn, device.signals, tags, dbc_path, clock)

    return StreamingSource(device.id, can, queue, clock)


def resolve_signal(device: DeviceConfig, signal_name: str) -> str:
    """A rule's signal is a point of its own device, or a full tag id of any device."""
    return signal_name if "." in signal_name else device.tag_id(signal_name)


def threshold_detector(device: DeviceConfig, rule: ThresholdRule) -> ThresholdDetector:
    tag_id = resolve_signal(device, rule.signal)
    return ThresholdDetector(
        name=f"{device.id}.{rule.name}",
        asset=device.asset_id,
        signal_tag=tag_id,
        hihi=rule.hihi,
        hi=rule.hi,
        lo=rule.lo,
        lolo=rule.lolo,
        deadband=rule.deadband,
        on_delay_s=rule.on_delay_s,
        off_delay_s=rule.off_delay_s,
        priority=rule.priority,
        priority_hihi=rule.priority_hihi,
        message=rule.message,
        detector_id=f"threshold:{rule.name}",
    )


def bearing_geometry(
    rule: VibrationRule, catalogue: BearingCatalogue | None
) -> BearingGeometry | None:
    from detectors.vibration.bearing import BearingGeometry
    from detectors.vibration.catalogue import BearingCatalogue

    if rule.bearing is None:
        return None
    if isinstance(rule.bearing, str):
        if catalogue is None:
            catalogue = BearingCatalogue.load()
        return catalogue.get(rule.bearing)
    return BearingGeometry(
        name=f"{rule.name}-bearing",
        balls=rule.bearing.balls,
        ball_diameter=rule.bearing.ball_diameter_mm,
        pitch_diameter=rule.bearing.pitch_diameter_mm,
        contact_angle_deg=rule.bearing.contact_angle_deg,
    )


def vibration_detector(
    device: DeviceConfig, rule: VibrationRule, catalogue: BearingCatalogue | None = None
) -> VibrationDetector:
    from detectors.vibration.detector import VibrationDetector
    from detectors.vibration.iso20816 import Foundation, MachineGroup

    return VibrationDetector(
        asset=device.asset_id,
        tag_id=resolve_signal(device, rule.signal),
        geometry=bearing_geometry(rule, catalogue),
        machine_group=MachineGroup(rule.machine_group),
        foundation=Foundation(rule.foundation),
        rpm_tag=resolve_signal(device, rule.rpm_signal) if rule.rpm_signal else None,
        fixed_rpm=rule.rpm,
        confirm_blocks=rule.confirm_blocks,
        baseline_blocks=rule.baseline_blocks,
        average_blocks=rule.average_blocks,
        name=f"{device.id}.{rule.name}",
    )


def lifecycle_policy(cfg: TicketingConfig) -> LifecyclePolicy:
    """`ticketing:` of gateway.yaml as the ticketing package's plain values (issue 5)."""
    return LifecyclePolicy(
        sla={p: SlaTarget(t.respond_min * 60, t.resolve_min * 60) for p, t in cfg.sla.items()},
        chatter_cycles=cfg.chatter_cycles,
        chatter_window_s=cfg.chatter_window_s,
        flood_threshold=cfg.flood_threshold,
        flood_window_s=cfg.flood_window_s,
        flood_end_below=cfg.flood_end_below,
        flood_p0_per_hour=cfg.flood_p0_per_hour,
        stale_after_s=cfg.stale_after_h * 3600,
        max_shelve_s=cfg.max_shelve_h * 3600,
        verification_window_s=cfg.verification_window_h * 3600,
        verification_tolerance=cfg.verification_tolerance,
        reopen_within_s=cfg.reopen_within_h * 3600,
        recurrence_within_s=cfg.recurrence_within_days * 86400,
        evidence_window_s=cfg.evidence_window_s,
        safety_detectors=frozenset(cfg.safety_detectors),
        cmms_codes=cfg.cmms_codes,
    )


def asset_profiles(devices: Sequence[DeviceConfig]) -> dict[str, AssetProfile]:
    """Routing fields, run-state tag and related tags of every asset, from the device YAML."""
    profiles: dict[str, AssetProfile] = {}
    for device in devices:
        info = device.asset
        tags = tuple(t.id for t in device_tags(device) if t.kind is TagKind.SCALAR)
        # The features a vibration rule derives from its waveform are related tags too: the
        # baseline and verification of a vibration ticket compare them (issue 5).
        tags += tuple(
            tag
            for rule in device.rules
            if isinstance(rule, VibrationRule)
            for tag in vibration_feature_tags(resolve_signal(device, rule.signal))
        )
        profile = AssetProfile(
            asset=device.asset_id,
            asset_class=info.asset_class,
            area=info.area,
            line=info.line,
            business_line=info.business_line,
            region=info.region,
            skill=info.skill,
            run_tag=resolve_signal(device, info.run_signal) if info.run_signal else None,
            run_above=info.run_above,
            tags=tags,
        )
        known = profiles.get(device.asset_id)
        # Several devices of one asset: their tags add up, and a field one file leaves empty
        # is taken from another (check-config has made sure that set fields agree).
        profiles[device.asset_id] = profile if known is None else _merged(known, profile)
    return profiles


def _merged(known: AssetProfile, more: AssetProfile) -> AssetProfile:
    return replace(
        known,
        asset_class=known.asset_class if known.asset_class != "generic" else more.asset_class,
        area=known.area or more.area,
        line=known.line or more.line,
        business_line=known.business_line or more.business_line,
        region=known.region or more.region,
        skill=known.skill or more.skill,
        run_tag=known.run_tag or more.run_tag,
        run_above=known.run_above if known.run_tag else more.run_above,
        tags=known.tags + more.tags,
    )


def _link_id(prefix: str, name: str) -> str:
    return f"{prefix}-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def topology_links(devices: Sequence[DeviceConfig]) -> list[Link]:
    """The parents of topology inhibition (issue 5): a Modbus TCP endpoint (a Modbus gateway
    may serve several unit ids), an RTU line, an OPC UA session, a CAN channel."""
    members: dict[tuple[str, str], list[DeviceConfig]] = {}
    for device in devices:
        conn = device.connection
        key: tuple[str, str]
        if isinstance(conn, ModbusTcpConnection):
            key = (conn.protocol, _link_id("modbus-tcp", f"{conn.host}-{conn.port}"))
        elif isinstance(conn, ModbusRtuConnection):
            key = (conn.protocol, _link_id("rtu", conn.port))
        elif isinstance(conn, OpcUaConnection):
            key = (conn.protocol, _link_id("opcua", conn.endpoint.split("://", 1)[-1]))
        else:
            key = (conn.protocol, _link_id("can", f"{conn.interface}-{conn.channel}"))
        members.setdefault(key, []).append(device)
    return [
        Link(
            id=link_id,
            kind=kind,
            assets=frozenset(d.asset_id for d in group),
            tags=frozenset(t.id for d in group for t in device_tags(d)),
        )
        for (kind, link_id), group in sorted(members.items())
    ]


def load_knowledge(loaded: LoadedConfig) -> KnowledgeBase:
    """`ticketing.knowledge_file`, relative to gateway.yaml. The default name may be absent
    (no knowledge base); a file named explicitly must exist."""
    cfg = loaded.gateway.ticketing
    if cfg.knowledge_file is None:
        return KnowledgeBase()
    path = Path(cfg.knowledge_file)
    path = path if path.is_absolute() else loaded.base_dir / path
    if not path.exists() and "knowledge_file" not in cfg.model_fields_set:
        return KnowledgeBase()
    knowledge = KnowledgeBase.load(path)
    log.info("Knowledge base `%s`: %d entries.", path, len(knowledge))
    return knowledge


def build_ticket_service(
    loaded: LoadedConfig, state: StateDatabase, encoder: MessageEncoder, clock: Clock
) -> TicketService:
    cfg = loaded.gateway
    devices = [device for _, device in loaded.devices]
    return TicketService(
        cfg.site,
        cfg.gateway_id,
        state,
        encoder,
        clock,
        policy=lifecycle_policy(cfg.ticketing),
        assets=asset_profiles(devices),
        links=topology_links(devices),
        knowledge=load_knowledge(loaded),
    )


def build_detectors(devices: Sequence[DeviceConfig]) -> list[Detector]:
    detectors: list[Detector] = []
    for device in devices:
        for rule in device.rules:
            if isinstance(rule, VibrationRule):
                detectors.append(vibration_detector(device, rule))
            else:
                detectors.append(threshold_detector(device, rule))
    return detectors


@dataclass
class Gateway:
    """The running daemon. `run()` returns once `stop` is set and everything has drained."""

    loaded: LoadedConfig
    clock: Clock

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.gateway

    async def run(
        self, stop: asyncio.Event, on_ready: Callable[[str], None] = log.info
    ) -> None:
        cfg = self.config
        state_dir = self.loaded.state_directory
        state_dir.mkdir(parents=True, exist_ok=True)
        devices = [device for _, device in self.loaded.devices]
        async with contextlib.AsyncExitStack() as stack:
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

            topics = Topics(cfg.uplink.topic_prefix, cfg.site, cfg.gateway_id)
            encoder = make_ticket_encoder(
                topics,
                source=f"urn:edge:{cfg.site}:{cfg.gateway_id}",
                sequence=state.outbox.next_sequence,
            )
            tickets = build_ticket_service(self.loaded, state, encoder, self.clock)
            await tickets.start()
            # Central commands on `cmd/<verb>` (issue 5): ids, revisions, actors, replays.
            ticket_commands = TicketCommands(
                tickets,
                state.outbox,
                state.commands,
                self.clock,
                actors=frozenset(cfg.ticketing.command_actors),
            )
            settings = UplinkSettings.from_config(
                cfg.uplink,
                cfg.site,
                cfg.gateway_id,
                password=self._mqtt_password(),
                tls=self._tls_settings(),
            )
            uplink = Uplink(settings, state.outbox, ticket_commands.handle, self.clock)
            # Issue 6: features per asset for `summaries/<asset>`, never the samples.
            summaries = SummaryCollector(
                {tag.id: tag.asset for _, d in self.loaded.devices for tag in device_tags(d)}
            )

            async def on_finding(finding: Finding) -> None:
                summaries.add_finding(finding)
                await tickets.on_finding(finding)

            async def store_samples(samples: Sequence[Sample]) -> None:
                summaries.add_samples(samples)
                await telemetry.write_samples(samples)
                await tickets.observe_samples(samples)  # run states, links, evidence (issue 5)

            async def store_waveform(waveform: Waveform) -> None:
                summaries.add_waveform(waveform)
                await telemetry.write_waveform(waveform)

            queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=QUEUE_SIZE)
            detectors = build_detectors(devices)
            snapshots = DetectorSnapshots(state_dir / "detectors")
            restore_detector_state(detectors, snapshots)
            runner = DetectorRunner(
                queue,
                detectors,
                on_finding,
                store_samples,
                self.clock,
                store_waveform=store_waveform,
            )
            sources = build_sources(self.loaded.devices, queue, self.clock)
            health = HealthReport(
                cfg.site,
                cfg.gateway_id,
                self.clock,
                sources,
                runner,
                uplink,
                state.outbox,
                telemetry,
                outbox_max_messages=cfg.uplink.outbox_max_messages,
                timestamp=rfc3339,
                ticket_kpis=tickets.kpis,
            )
            health_server = await self._start_health_server(health)
            if health_server is not None:
                stack.push_async_callback(health_server.close)
            # Sink end first.
            sink_tasks = [
                asyncio.create_task(uplink.run_uplink(), name="uplink"),
                asyncio.create_task(runner.run_detectors(), name="detectors"),
                *self._housekeeping_tasks(telemetry, uplink, health, summaries, topics),
                asyncio.create_task(tickets.run_timers(), name="ticketing.timers"),
                asyncio.create_task(
                    run_detector_state_saver(detectors, snapshots), name="detectors.state"
                ),
            ]
            source_tasks = [
                asyncio.create_task(source.run_source(), name=source.name) for source in sources
            ]
            status = (
                f"Gateway `{cfg.gateway_id}` of site `{cfg.site}` running: "
                f"{len(sources)} devices, {len(detectors)} detectors."
            )
            health.ready = True
            on_ready(status)
            stopper = asyncio.create_task(stop.wait(), name="stop")
            try:
                done, _ = await asyncio.wait(
                    [stopper, *sink_tasks, *source_tasks], return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task is not stopper and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                stopper.cancel()
                health.ready = False
                log.info("Stopping: sources first, then draining the queue.")
                await _cancel(source_tasks)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(runner.drain(), STOP_DEADLINE_S)
                await _cancel(sink_tasks)
                save_detector_state(detectors, snapshots)

    def _housekeeping_tasks(
        self,
        telemetry: TelemetryStore,
        uplink: Uplink,
        health: HealthReport,
        summaries: SummaryCollector,
        topics: Topics,
    ) -> list[asyncio.Task[None]]:
        """Retention, the `health` topic and `summaries/<asset>` (issue 6)."""
        cfg = self.config
        storage = cfg.storage
        tasks = [
            asyncio.create_task(
                telemetry.run_retention(
                    self.clock,
                    max_age_s=storage.telemetry_retention_h * 3600.0,
                    max_bytes=int(storage.telemetry_max_mb * 1e6),
                    period_s=storage.retention_check_s,
                ),
                name="retention",
            ),
            asyncio.create_task(telemetry.run_flusher(), name="telemetry-flush"),
        ]
        if cfg.uplink.health_period_s is not None:

            async def publish_health(document: dict[str, Any]) -> bool:
                return await uplink.enqueue_droppable(OutboxKind.HEALTH, topics.health, document)

            tasks.append(
                asyncio.create_task(
                    run_health_topic(health.collect, publish_health, cfg.uplink.health_period_s),
                    name="health",
                )
            )
        if cfg.uplink.summary_period_s is not None:

            async def publish_summary(asset: str, document: dict[str, Any]) -> bool:
                topic = topics.summary(asset)
                return await uplink.enqueue_droppable(OutboxKind.SUMMARY, topic, document)

            tasks.append(
                asyncio.create_task(
                    run_summaries(
                        summaries,
                        publish_summary,
                        self.clock,
                        site=cfg.site,
                        gateway=cfg.gateway_id,
                        period_s=cfg.uplink.summary_period_s,
                        timestamp=rfc3339,
                    ),
                    name="summaries",
                )
            )
        return tasks

    async def _start_health_server(self, health: HealthReport) -> HealthServer | None:
        """Off unless `health.port` is set. An address that cannot be bound costs the
        endpoints, not the plant: polling, tickets and the uplink go on."""
        address = self.config.health
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

    def _resolve(self, name: str) -> str:
        path = Path(name)
        return str(path if path.is_absolute() else self.loaded.base_dir / path)

    def _tls_settings(self) -> TlsSettings | None:
        """Certificate paths relative to gateway.yaml; no TLS config means a plaintext link."""
        tls = self.config.uplink.tls
        if tls is None:
            return None
        return TlsSettings(
            ca_file=self._resolve(tls.ca_file),
            cert_file=self._resolve(tls.cert_file),
            key_file=self._resolve(tls.key_file),
        )

    def _mqtt_password(self) -> str | None:
        """Secrets are read from a file named in the config, relative to gateway.yaml."""
        name = self.config.uplink.password_file
        if name is None:
            return None
        path = Path(name) if Path(name).is_absolute() else self.loaded.base_dir / name
        return path.read_text().strip()


CANCEL_RETRY_S = 1.0


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel and wait. A cancel can be swallowed inside a library's `asyncio.wait_for` on
    Python 3.11 (seen with pymodbus in the polling benchmark), so a task still running after
    `CANCEL_RETRY_S` is cancelled again, until it ends: a stop never hangs on one device."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
        for task in pending:
            log.warning("Task `%s` ignored a cancel; cancelling it again.", task.get_name())
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_gateway(loaded: LoadedConfig, clock: Clock | None = None) -> None:
    await run_until_stopped(loaded, lambda config: Gateway(config, clock or SystemClock()))


def main(config_path: str) -> int:
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    asyncio.run(run_gateway(loaded))
    log.info("Gateway stopped cleanly.")
    return 0
