"""CAN as the composition root sees it: tags (units from the DBC), the channel's streaming
endpoint and link, and the DBC check.

python-can and cantools are imported (through `protocols.can.driver` and `protocols.can.dbc`)
only when a site has a CAN device.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.core.clock import Clock
from gateway.core.errors import ConfigError, ConfigProblem
from gateway.core.interfaces import StreamingDriver
from gateway.core.net import file_says, path_exists
from gateway.core.plugins import (
    DeviceIssue,
    DeviceSpec,
    Endpoint,
    Lazy,
    LinkKey,
    Probe,
    ProtocolPlugin,
    StreamingEndpoint,
)
from gateway.core.records import Tag
from protocols.can.config import CanConnection, CanSignal
from protocols.can.discovery import IMPORT_DBC

if TYPE_CHECKING:
    from protocols.can.driver import CanDriver

_DRIVER: Lazy[type[CanDriver]] = Lazy("protocols.can.driver:CanDriver")
_SIGNAL_UNITS: Lazy[Callable[..., dict[str, str]]] = Lazy("protocols.can.dbc:signal_units")
# python-can interfaces whose channel is a serial port (a USB-CAN adapter).
SERIAL_INTERFACES = frozenset({"slcan", "serial", "robotell", "seeedstudio"})
# Problems located in the device file carry this name; others are inside the DBC itself.
_DEVICE_FILE = "<device file>"


def dbc_path(device: DeviceSpec) -> Path:
    """The DBC named in the device file, relative to that file."""
    connection: CanConnection = device.connection
    return device.resolve(connection.dbc)


def channel_probe(connection: CanConnection) -> Probe | None:
    """How to tell the channel is back without opening the bus: a SocketCAN link that is up
    again, a USB-serial adapter present again. Other interfaces have no cheap check: their
    backoff alone decides."""
    channel = connection.channel
    if connection.interface == "socketcan":
        operstate = f"/sys/class/net/{channel}/operstate"

        async def link_up() -> bool:
            # A CAN netdev reports "up" (or "unknown" on some drivers) once `ip link set up`.
            return await file_says(operstate, "up") or await file_says(operstate, "unknown")

        return link_up
    if connection.interface in SERIAL_INTERFACES and channel.startswith("/"):

        async def adapter_present() -> bool:
            return await path_exists(channel)

        return adapter_present
    return None


class Can:
    name = "can"
    connection_model = CanConnection
    values_field = "signals"
    values_description = "CAN devices: the DBC signals to decode."
    value_model = CanSignal
    discovery = (IMPORT_DBC,)  # `edge-gateway import-dbc`

    def tags(self, device: DeviceSpec) -> list[Tag]:
        signals: Sequence[CanSignal] = device.values
        units = _SIGNAL_UNITS.get()(dbc_path(device), signals, device_id=device.id)
        return [
            Tag(
                id=device.tag_id(signal.name),
                asset=device.asset,
                unit=signal.unit or units.get(device.tag_id(signal.name), ""),
            )
            for signal in signals
        ]

    def endpoints(self, devices: Sequence[DeviceSpec], clock: Clock) -> list[Endpoint]:
        return [self._endpoint(device, clock) for device in devices]

    def _endpoint(self, device: DeviceSpec, clock: Clock) -> StreamingEndpoint:
        connection: CanConnection = device.connection
        signals: Sequence[CanSignal] = device.values
        path = dbc_path(device)
        tags = self.tags(device)

        def driver() -> StreamingDriver:
            return _DRIVER.get()(device.id, connection, signals, tags, path, clock)

        return StreamingEndpoint(device.id, driver, probe=channel_probe(connection))

    def link(self, device: DeviceSpec) -> LinkKey:
        connection: CanConnection = device.connection
        return LinkKey.named(self.name, "can", f"{connection.interface}-{connection.channel}")

    def check(self, devices: Sequence[DeviceSpec]) -> Iterable[DeviceIssue | ConfigProblem]:
        """The DBC parses and holds every configured message and signal, before a bus opens."""
        for index, device in enumerate(devices):
            path = dbc_path(device)
            if not (path.is_file() and os.access(path, os.R_OK)):
                continue  # reported by the generic check of named files
            try:
                _SIGNAL_UNITS.get()(
                    path, device.values, device_id=device.id, config_file=_DEVICE_FILE
                )
            except ConfigError as exc:
                for problem in exc.problems:
                    if problem.file != _DEVICE_FILE:
                        yield problem
                    else:  # signals[0] -> signals.0, the dotted path of the device file
                        yield DeviceIssue(
                            index, re.sub(r"\[(\d+)\]", r".\1", problem.path), problem.message
                        )


CAN: ProtocolPlugin = Can()
