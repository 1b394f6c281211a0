"""Composition root: the one place that names concrete drivers, detectors, stores and the uplink.

Start order is from the sink end (stores, uplink, ticketing, detectors, sources); stop order is
from the source end, draining what is queued, within a deadline (DESIGN.md section 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectors.threshold import ThresholdDetector
from detectors.vibration.bearing import BearingGeometry
from detectors.vibration.catalogue import BearingCatalogue
from detectors.vibration.detector import VibrationDetector
from detectors.vibration.iso20816 import Foundation, MachineGroup
from gateway.config.loader import LoadedConfig, load_config
from gateway.config.models import DeviceConfig, GatewayConfig, ThresholdRule, VibrationRule
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import ConfigError
from gateway.core.interfaces import (
    Command,
    CommandReply,
    Detector,
    PollingDriver,
    Record,
    StreamingDriver,
)
from gateway.core.records import Finding, Tag, TagKind
from gateway.pipeline.runner import DetectorRunner
from gateway.pipeline.source import PollingSource, SharedLineSource, stagger_phases
from gateway.pipeline.stream import StreamingSource
from gateway.sdnotify import SystemdNotifier
from gateway.store import StateStore, TelemetryStore
from gateway.ticketing.service import TicketService
from protocols.can.config import CanConnection
from protocols.can.dbc import signal_units
from protocols.can.driver import CanDriver
from protocols.modbus.config import ModbusPoint, ModbusRtuConnection, ModbusTcpConnection
from protocols.modbus.driver import ModbusRtuLine, ModbusTcpDriver, log_read_plan
from protocols.modbus.line import group_rtu_devices
from protocols.opcua.config import OpcUaConnection
from protocols.opcua.driver import OpcUaDriver
from uplink.events import Topics, make_ticket_encoder
from uplink.service import Uplink, UplinkSettings

log = logging.getLogger("gateway")

EX_CONFIG = 78
QUEUE_SIZE = 10_000
STOP_DEADLINE_S = 10.0


def state_directory(loaded: LoadedConfig) -> Path:
    directory = Path(loaded.gateway.storage.directory)
    return directory if directory.is_absolute() else loaded.base_dir / directory


def device_tags(device: DeviceConfig, units: dict[str, str] | None = None) -> list[Tag]:
    """Tags of a device. Drivers deliver engineering units, so scale and offset are informative."""
    units = units or {}
    if device.points:
        return [
            Tag(
                id=device.tag_id(point.name),
                asset=device.asset_id,
                unit=point.unit,
                scale=point.scale,
                offset=point.offset,
            )
            for point in device.points
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
        tags = device_tags(device)

        def opcua() -> StreamingDriver:
            return OpcUaDriver(
                device.id, conn, device.nodes, tags, clock, poll_period_s=device.poll_period_s
            )

        return StreamingSource(device.id, opcua, queue, clock)
    if not isinstance(conn, CanConnection):
        raise TypeError(f"device `{device.id}`: {conn.protocol} is served by its line's source")
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
        name=f"{device.id}.{rule.name}",
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

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        state_dir = state_directory(self.loaded)
        state_dir.mkdir(parents=True, exist_ok=True)
        devices = [device for _, device in self.loaded.devices]
        async with contextlib.AsyncExitStack() as stack:
            state = await StateStore.open(state_dir / "state.db")
            stack.push_async_callback(state.close)
            telemetry = await TelemetryStore.open(state_dir / "telemetry.db")
            stack.push_async_callback(telemetry.close)

            topics = Topics(cfg.uplink.topic_prefix, cfg.site, cfg.gateway_id)
            encoder = make_ticket_encoder(
                topics, source=f"urn:edge:{cfg.site}:{cfg.gateway_id}", sequence=state.next_sequence
            )
            tickets = TicketService(cfg.site, cfg.gateway_id, state, encoder, self.clock)
            await tickets.start()

            async def on_command(command: Command) -> CommandReply:
                reply = await self._handle_command(command, state, tickets)
                uplink.wake()  # an acknowledgement is itself a ticket change to announce
                return reply

            settings = UplinkSettings.from_config(
                cfg.uplink, cfg.site, cfg.gateway_id, password=self._mqtt_password()
            )
            uplink = Uplink(settings, state, on_command, self.clock)

            async def on_finding(finding: Finding) -> None:
                await tickets.on_finding(finding)
                uplink.wake()  # publish the committed change now, not at the next outbox poll

            queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=QUEUE_SIZE)
            detectors = build_detectors(devices)
            runner = DetectorRunner(
                queue,
                detectors,
                tickets.on_finding,
                telemetry.write_samples,
                self.clock,
            )
            sources = build_sources(self.loaded.devices, queue, self.clock)
            # Sink end first.
            sink_tasks = [
                asyncio.create_task(uplink.run_uplink(), name="uplink"),
                asyncio.create_task(runner.run_detectors(), name="detectors"),
            ]
            source_tasks = [
                asyncio.create_task(source.run_source(), name=source.name) for source in sources
            ]
            status = (
                f"Gateway `{cfg.gateway_id}` of site `{cfg.site}` running: "
                f"{len(sources)} devices, {len(detectors)} detectors."
            )
            log.info(status)
            notifier = SystemdNotifier()
            notifier.ready(status)
            if notifier.watchdog_interval_s is not None:
                sink_tasks.append(asyncio.create_task(notifier.run_watchdog(), name="watchdog"))
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
                notifier.stopping()
                log.info("Stopping: sources first, then draining the queue.")
                await _cancel(source_tasks)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(runner.drain(), STOP_DEADLINE_S)
                await _cancel(sink_tasks)

    def _mqtt_password(self) -> str | None:
        """Secrets are read from a file named in the config, relative to gateway.yaml."""
        name = self.config.uplink.password_file
        if name is None:
            return None
        path = Path(name) if Path(name).is_absolute() else self.loaded.base_dir / name
        return path.read_text().strip()

    async def _handle_command(
        self, command: Command, state: StateStore, tickets: TicketService
    ) -> CommandReply:
        if command.verb != "ack":
            return CommandReply(command.command_id, False, f"unknown command `{command.verb}`")
        now = self.clock.now()
        event_id = command.body.get("event_id")
        ticket_id = command.body.get("ticket_id")
        settled = await state.settle_event(str(event_id), now) if event_id else None
        if settled is not None and ticket_id is None:
            ticket_id = settled.ticket_id
        ticket = None
        if ticket_id is not None:
            central_id = command.body.get("central_id")
            ticket = await tickets.acknowledge(
                str(ticket_id), str(central_id) if central_id else None, now
            )
        if settled is None and ticket is None:
            return CommandReply(command.command_id, False, "unknown event_id and ticket_id")
        return CommandReply(command.command_id, True)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_gateway(loaded: LoadedConfig, clock: Clock | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Gateway(loaded, clock or SystemClock()).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


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
