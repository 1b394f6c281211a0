"""The configured devices as their protocol plugins see them: tags (computed once per device),
endpoints to run, and the communication links topology inhibition needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config.models import DeviceConfig
from gateway.core.clock import Clock
from gateway.core.plugins import DeviceSpec, Endpoint, PluginTable, ProtocolPlugin
from gateway.core.records import Tag
from gateway.ticketing.topology import Link


@dataclass(frozen=True, slots=True)
class ConfiguredDevice:
    config: DeviceConfig
    spec: DeviceSpec
    protocol: ProtocolPlugin
    tags: tuple[Tag, ...]


def configured_devices(
    devices: Sequence[tuple[Path, DeviceConfig]], protocols: PluginTable[ProtocolPlugin]
) -> list[ConfiguredDevice]:
    configured = []
    for path, config in devices:
        spec = config.spec(path)
        plugin = protocols.get(config.protocol)
        configured.append(ConfiguredDevice(config, spec, plugin, tuple(plugin.tags(spec))))
    return configured


def endpoints(devices: Sequence[ConfiguredDevice], clock: Clock) -> list[Endpoint]:
    """Each protocol builds the endpoints of all its devices at once (an RTU line groups
    several), in the order protocols first appear in the configuration."""
    by_protocol: dict[str, list[ConfiguredDevice]] = {}
    for device in devices:
        by_protocol.setdefault(device.protocol.name, []).append(device)
    return [
        endpoint
        for members in by_protocol.values()
        for endpoint in members[0].protocol.endpoints([m.spec for m in members], clock)
    ]


def topology_links(devices: Sequence[ConfiguredDevice]) -> list[Link]:
    """The parents of topology inhibition: every link (a Modbus TCP endpoint, an RTU line, an
    OPC UA session, a CAN channel) with the assets and tags behind it."""
    members: dict[tuple[str, str], list[ConfiguredDevice]] = {}
    for device in devices:
        key = device.protocol.link(device.spec)
        members.setdefault((key.kind, key.id), []).append(device)
    return [
        Link(
            id=link_id,
            kind=kind,
            assets=frozenset(d.spec.asset for d in group),
            tags=tuple(t.id for d in group for t in d.tags),
        )
        for (kind, link_id), group in sorted(members.items())
    ]


def asset_of_tags(devices: Sequence[ConfiguredDevice]) -> dict[str, str]:
    return {tag.id: tag.asset for device in devices for tag in device.tags}
