"""Modbus TCP and RTU as the composition root sees them: tags, endpoints, links and checks.

Pure apart from building drivers: pymodbus is imported (through `protocols.modbus.driver`)
only when a site has a Modbus device to poll.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from gateway.core.clock import Clock
from gateway.core.errors import ConfigProblem, Severity
from gateway.core.interfaces import PollingDriver, SharedLine
from gateway.core.net import path_exists, tcp_accepts
from gateway.core.plugins import (
    DeviceIssue,
    DeviceSpec,
    Endpoint,
    Lazy,
    LinkKey,
    PollingEndpoint,
    ProtocolPlugin,
    SharedLineEndpoint,
)
from gateway.core.records import Tag, TagKind
from protocols.modbus.config import DataType, ModbusPoint, ModbusRtuConnection, ModbusTcpConnection
from protocols.modbus.discovery import SCAN_MODBUS
from protocols.modbus.line import group_rtu_devices
from protocols.modbus.points import (
    check_points,
    log_read_plan,
    modicon_like_addresses,
    overlapping_points,
)

if TYPE_CHECKING:
    from protocols.modbus.driver import ModbusRtuLine, ModbusTcpDriver

PROBE_TIMEOUT_S = 1.0
_TCP_DRIVER: Lazy[type[ModbusTcpDriver]] = Lazy("protocols.modbus.driver:ModbusTcpDriver")
_RTU_LINE: Lazy[type[ModbusRtuLine]] = Lazy("protocols.modbus.driver:ModbusRtuLine")


def tag_kind(point: ModbusPoint) -> TagKind:
    if point.waveform is not None:
        return TagKind.WAVEFORM
    return TagKind.STATE if point.enum else TagKind.SCALAR


def modbus_tags(device: DeviceSpec) -> list[Tag]:
    """One tag per point; text points are left out (a text is not a Sample value: the
    driver reports it through `texts()`)."""
    points: Sequence[ModbusPoint] = device.values
    return [
        tag
        for tag, point in zip(_point_tags(device), points, strict=True)
        if point.type is not DataType.STRING
    ]


def _point_tags(device: DeviceSpec) -> list[Tag]:
    """One tag per point, text points included, in point order: what a driver is given (it
    pairs `points[i]` with `tags[i]` and leaves the text points out of its records)."""
    return [
        Tag(
            id=device.tag_id(point.name),
            asset=device.asset,
            unit=point.unit,
            kind=tag_kind(point),
        )
        for point in device.values
    ]


def _point_issues(devices: Sequence[DeviceSpec]) -> Iterable[DeviceIssue]:
    for index, device in enumerate(devices):
        names = device.value_names
        # Duplicate names are reported, with their lines, by the generic tag id check.
        if len(set(names)) == len(names):
            for message in check_points(device.values):
                yield DeviceIssue(index, "points", message)
        for point, message in overlapping_points(device.values):
            yield DeviceIssue(index, f"points.{point}.address", message)
        for point, message in modicon_like_addresses(device.values):
            yield DeviceIssue(index, f"points.{point}.address", message, Severity.WARNING)


class ModbusTcp:
    name = "modbus_tcp"
    discovery = (SCAN_MODBUS,)  # `edge-gateway scan modbus`
    connection_model = ModbusTcpConnection
    values_field = "points"
    values_description = "Modbus devices: the registers to read."
    value_model = ModbusPoint

    def tags(self, device: DeviceSpec) -> list[Tag]:
        return modbus_tags(device)

    def endpoints(self, devices: Sequence[DeviceSpec], clock: Clock) -> list[Endpoint]:
        return [self._endpoint(device, clock) for device in devices]

    def _endpoint(self, device: DeviceSpec, clock: Clock) -> PollingEndpoint:
        connection: ModbusTcpConnection = device.connection
        points: Sequence[ModbusPoint] = device.values
        tags = _point_tags(device)
        log_read_plan(device.id, points, connection)

        def driver() -> PollingDriver:
            return _TCP_DRIVER.get()(device.id, connection, points, tags, clock)

        async def probe() -> bool:
            return await tcp_accepts(connection.host, connection.port, PROBE_TIMEOUT_S)

        # The timeout bounds a whole connect or poll, which may be several requests; each
        # request has its own `timeout_s`, checked shorter than the period.
        return PollingEndpoint(
            device.id, driver, device.poll_period_s, device.poll_period_s, probe=probe
        )

    def link(self, device: DeviceSpec) -> LinkKey:
        connection: ModbusTcpConnection = device.connection
        # One endpoint may be a Modbus gateway serving several unit ids.
        return LinkKey.named(self.name, "modbus-tcp", f"{connection.host}-{connection.port}")

    def check(self, devices: Sequence[DeviceSpec]) -> Iterable[DeviceIssue | ConfigProblem]:
        return _point_issues(devices)


class ModbusRtu:
    """Device files naming the same serial port are units of one line: one task polls the
    line, one request at a time."""

    name = "modbus_rtu"
    connection_model = ModbusRtuConnection
    values_field = "points"
    values_description = "Modbus devices: the registers to read."
    value_model = ModbusPoint

    def tags(self, device: DeviceSpec) -> list[Tag]:
        return modbus_tags(device)

    def endpoints(self, devices: Sequence[DeviceSpec], clock: Clock) -> list[Endpoint]:
        by_id = {device.id: device for device in devices}
        groups = group_rtu_devices((device.id, device.connection) for device in devices)
        return [
            self._line([by_id[i] for i in group.device_ids], group.port, group.line_id, clock)
            for group in groups
        ]

    def _line(
        self, members: Sequence[DeviceSpec], port: str, group_line_id: str, clock: Clock
    ) -> SharedLineEndpoint:
        units = [(d.id, d.connection, d.values, _point_tags(d)) for d in members]
        for device in members:
            log_read_plan(device.id, device.values, device.connection)

        def line() -> SharedLine:
            return _RTU_LINE.get()(port, units, clock)

        async def probe() -> bool:
            return await path_exists(port)  # a USB adapter unplugged and plugged back

        periods = {device.id: device.poll_period_s for device in members}
        return SharedLineEndpoint(group_line_id, line, periods, probe=probe)

    def link(self, device: DeviceSpec) -> LinkKey:
        connection: ModbusRtuConnection = device.connection
        return LinkKey.named(self.name, "rtu", connection.port)

    def check(self, devices: Sequence[DeviceSpec]) -> Iterable[DeviceIssue | ConfigProblem]:
        yield from _point_issues(devices)
        try:
            group_rtu_devices((device.id, device.connection) for device in devices)
        except ValueError as exc:
            # About the line as a whole: reported at each member's port.
            for index in range(len(devices)):
                yield DeviceIssue(index, "connection.port", str(exc))


MODBUS_TCP: ProtocolPlugin = ModbusTcp()
MODBUS_RTU: ProtocolPlugin = ModbusRtu()
