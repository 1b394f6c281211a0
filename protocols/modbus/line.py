"""RTU lines: device files naming the same serial `port` are units on one RS-485 line, polled
by one task for the line, one request at a time. Pure: plain values in and out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protocols.modbus.config import ModbusRtuConnection


@dataclass(frozen=True, slots=True)
class RtuLineGroup:
    """The devices sharing one serial port, in config order."""

    port: str
    device_ids: tuple[str, ...]

    @property
    def line_id(self) -> str:
        """Name of the line's task, `source[rtu:/dev/ttyUSB0]`, as the config reads."""
        return f"rtu:{self.port}"


def group_rtu_devices(devices: Iterable[tuple[str, ModbusRtuConnection]]) -> list[RtuLineGroup]:
    """Group (device id, RTU connection) pairs by serial port, ports in order of first use.

    Raises ValueError listing every problem at once: units of one line whose serial settings
    (baud rate, parity, stop bits, data bits) differ, or two devices with the same unit id.
    """
    by_port: dict[str, list[tuple[str, ModbusRtuConnection]]] = {}
    for device_id, connection in devices:
        by_port.setdefault(connection.port, []).append((device_id, connection))
    problems: list[str] = []
    for port, members in by_port.items():
        first_id, first = members[0]
        units: dict[int, str] = {}
        for device_id, connection in members:
            if connection.line_settings() != first.line_settings():
                problems.append(
                    f"`{device_id}` uses {_settings(connection)} on `{port}`, but `{first_id}`"
                    f" uses {_settings(first)}; units of one line share its settings"
                )
            other = units.setdefault(connection.unit_id, device_id)
            if other != device_id:
                problems.append(
                    f"`{device_id}` and `{other}` both use unit {connection.unit_id} on `{port}`"
                )
    if problems:
        raise ValueError("; ".join(problems))
    return [
        RtuLineGroup(port, tuple(device_id for device_id, _ in members))
        for port, members in by_port.items()
    ]


def _settings(c: ModbusRtuConnection) -> str:
    return f"{c.baudrate} baud {c.bytesize}{c.parity}{c.stopbits}"
