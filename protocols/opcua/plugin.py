"""OPC UA as the composition root sees it: tags, the streaming endpoint and its session link.

asyncua is imported (through `protocols.opcua.driver`) only when a site has an OPC UA device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.core.clock import Clock
from gateway.core.errors import ConfigProblem
from gateway.core.interfaces import StreamingDriver
from gateway.core.net import tcp_accepts
from gateway.core.plugins import (
    DeviceIssue,
    DeviceSpec,
    Endpoint,
    Lazy,
    LinkKey,
    ProtocolPlugin,
    StreamingEndpoint,
)
from gateway.core.records import Tag, TagKind
from protocols.opcua.config import NodeKind, NodeMode, OpcUaConnection, OpcUaNode
from protocols.opcua.discovery import BROWSE

if TYPE_CHECKING:
    from protocols.opcua.driver import OpcUaDriver

PROBE_TIMEOUT_S = 1.0
DEFAULT_PORT = 4840  # IANA's opc-ua-tcp


def endpoint_address(url: str) -> tuple[str, int]:
    """Host and port of `opc.tcp://host[:port][/path]` (the model's pattern has checked it)."""
    parsed = urlsplit(url)
    return parsed.hostname or "", parsed.port or DEFAULT_PORT


_DRIVER: Lazy[type[OpcUaDriver]] = Lazy("protocols.opcua.driver:OpcUaDriver")


class OpcUa:
    name = "opcua"
    connection_model = OpcUaConnection
    values_field = "nodes"
    values_description = "OPC UA devices: the nodes to subscribe to or poll."
    value_model = OpcUaNode
    discovery = (BROWSE,)  # `edge-gateway browse`

    def tags(self, device: DeviceSpec) -> list[Tag]:
        return [
            Tag(
                id=device.tag_id(node.name),
                asset=device.asset,
                unit=node.unit,
                kind=TagKind.WAVEFORM if node.kind is NodeKind.WAVEFORM else TagKind.SCALAR,
            )
            for node in device.values
        ]

    def endpoints(self, devices: Sequence[DeviceSpec], clock: Clock) -> list[Endpoint]:
        return [self._endpoint(device, clock) for device in devices]

    def _endpoint(self, device: DeviceSpec, clock: Clock) -> StreamingEndpoint:
        # Certificates, keys and password files are relative to the device file.
        connection = resolved_connection(device)
        nodes: Sequence[OpcUaNode] = device.values
        tags = self.tags(device)

        def driver() -> StreamingDriver:
            # Subscribed nodes stream; `mode: poll` nodes are read at the device's period.
            return _DRIVER.get()(
                device.id, connection, nodes, tags, clock, poll_period_s=device.poll_period_s
            )

        host, port = endpoint_address(connection.endpoint)

        async def probe() -> bool:
            return await tcp_accepts(host, port, PROBE_TIMEOUT_S)

        reconnect = (connection.reconnect_min_s, connection.reconnect_max_s)
        return StreamingEndpoint(
            device.id,
            driver,
            probe=probe,
            reconnect_s=reconnect,
            silence_limit_s=silence_limit_s(device),
        )

    def link(self, device: DeviceSpec) -> LinkKey:
        connection: OpcUaConnection = device.connection
        return LinkKey.named(self.name, "opcua", connection.endpoint.split("://", 1)[-1])

    def check(self, devices: Sequence[DeviceSpec]) -> Iterable[DeviceIssue | ConfigProblem]:
        """A timeout written for a device whose nodes are polled must be shorter than the poll
        period (the default is, by construction); subscriptions have no period to fit in."""
        for index, device in enumerate(devices):
            connection: OpcUaConnection = device.connection
            polled = any(node.mode is NodeMode.POLL for node in device.values)
            timeout = connection.timeout_s
            if polled and timeout is not None and timeout >= device.poll_period_s:
                yield DeviceIssue(
                    index,
                    "connection.timeout_s",
                    f"timeout_s ({timeout:g} s) must be shorter than poll_period_s "
                    f"({device.poll_period_s:g} s) when nodes are read with `mode: poll`",
                )


# A node that delivered nothing (not even a bad status) this many of its periods after the
# session opened is reported as silent; never sooner than the floor (a slow first publish).
_SILENT_AFTER_PERIODS = 3
_SILENT_FLOOR_S = 5.0


def silence_limit_s(device: DeviceSpec) -> float:
    """A few of the device's longest period: publishing interval, sampling intervals, and
    the poll period when nodes are polled."""
    connection: OpcUaConnection = device.connection
    periods = [connection.publishing_interval_ms / 1000.0]
    for node in device.values:
        if node.mode is NodeMode.POLL:
            periods.append(device.poll_period_s)
        elif node.sampling_interval_ms:
            periods.append(node.sampling_interval_ms / 1000.0)
    return max(_SILENT_FLOOR_S, _SILENT_AFTER_PERIODS * max(periods))


def resolved_connection(device: DeviceSpec) -> OpcUaConnection:
    connection: OpcUaConnection = device.connection
    return connection.with_paths_resolved(device.resolve)


OPCUA: ProtocolPlugin = OpcUa()
