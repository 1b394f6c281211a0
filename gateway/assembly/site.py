"""The local site page from `gateway.yaml`'s `site_page:` section: the devices and points it
lists, the spectrum detectors it draws, and its server, started like the health endpoints.

Off unless `site_page.port` is set. A page that cannot start (the address is taken, the
password file cannot be read) costs the page, not the plant: polling, tickets and the uplink
go on, and the log says why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.assembly.plant import ConfiguredDevice
from gateway.config.files import read_password
from gateway.config.loader import LoadedConfig
from gateway.core.clock import Clock
from gateway.core.interfaces import Detector, SpectrumDetector
from gateway.core.plugins import Lazy
from gateway.core.records import Finding, Ticket, Waveform
from gateway.runtime.health import HealthReport
from gateway.runtime.site.live_values import LiveValues
from gateway.runtime.site.pages import DeviceInfo, PointInfo, SitePages
from gateway.runtime.site.snapshots import SnapshotRecorder, SpectrumSnapshots
from gateway.store import StateDatabase, TelemetryStore
from gateway.ticketing.service import TicketService

if TYPE_CHECKING:
    from gateway.runtime.site.server import SitePageServer

log = logging.getLogger("gateway")

# The page is off by default: a site without it never loads aiohttp and jinja2 (about 13 MB
# of RSS on a one-device site).
_SERVER: Lazy[type[SitePageServer]] = Lazy("gateway.runtime.site.server:SitePageServer")


@dataclass
class SitePage:
    """The running page and what the pipeline feeds it."""

    server: SitePageServer
    live: LiveValues
    recorder: SnapshotRecorder


def device_infos(
    devices: Sequence[ConfiguredDevice], detectors: Sequence[Detector]
) -> list[DeviceInfo]:
    """Every configured value with its unit, kind and enum labels, and the tags detectors
    derive (listed under the device of the tag they derive from)."""
    derived: dict[str, list[PointInfo]] = {}
    for detector in detectors:
        for feature in detector.derived_tags:
            owner, _, name = feature.id.partition(".")
            derived.setdefault(owner, []).append(
                PointInfo(name, feature.id, feature.unit, "derived")
            )
    out = []
    for device in devices:
        values = {device.spec.tag_id(value.name): value for value in device.spec.values}
        points = []
        for tag in device.tags:
            # `enum` (value -> label) exists on the protocols that have it (Modbus points).
            labels = getattr(values.get(tag.id), "enum", None) or {}
            points.append(
                PointInfo(
                    name=tag.id.partition(".")[2],
                    tag=tag.id,
                    unit=tag.unit,
                    kind=tag.kind.value,
                    enum={int(k): str(v) for k, v in labels.items()},
                )
            )
        out.append(
            DeviceInfo(
                id=device.spec.id,
                asset=device.spec.asset,
                name=device.config.asset.name,
                protocol=device.protocol.name,
                points=(*points, *derived.get(device.spec.id, ())),
            )
        )
    return out


async def start_site_page(
    loaded: LoadedConfig,
    clock: Clock,
    *,
    health: HealthReport,
    devices: Sequence[ConfiguredDevice],
    detectors: Sequence[Detector],
    telemetry: TelemetryStore,
    state: StateDatabase,
    tickets: TicketService,
) -> SitePage | None:
    cfg = loaded.gateway.site_page
    if cfg.port is None:
        return None
    password = None
    if cfg.password_file is not None:
        path = loaded.resolve(cfg.password_file)
        try:
            password = read_password(path)
        except OSError as exc:
            log.error("Site page not started: cannot read its password file `%s`: %s", path, exc)
            return None
        except ValueError as exc:
            log.error("Site page not started: its password file `%s` %s.", path, exc)
            return None
    spectra = [d for d in detectors if isinstance(d, SpectrumDetector)]
    snapshots = SpectrumSnapshots(loaded.state_directory / "site" / "spectra")
    live = LiveValues()
    pages = SitePages(
        site=loaded.gateway.site,
        gateway=loaded.gateway.gateway_id,
        clock=clock,
        report=health.collect,
        devices=device_infos(devices, detectors),
        live=live,
        telemetry=telemetry,
        tickets=tickets,
        history=state.tickets,
        messages=state.outbox,
        spectra=spectra,
        snapshots=snapshots,
    )
    server = _SERVER.get()(
        pages,
        cfg.host,
        cfg.port,
        password=password,
        update_s=cfg.update_s,
        max_viewers=cfg.max_viewers,
    )
    try:
        await server.start()
    except OSError as exc:
        log.error("Site page not available: cannot listen on `%s:%d`: %s", cfg.host, cfg.port,
                  exc)  # fmt: skip
        return None

    def ticket_of(finding: Finding) -> Ticket | None:
        return tickets.ticket_for(tickets.key_of(finding))

    async def waveform_at(tag: str, ts: float) -> Waveform | None:
        return await telemetry.latest_waveform(tag, at_or_before=ts)

    recorder = SnapshotRecorder(snapshots, spectra, ticket_of, waveform_at)
    return SitePage(server, live, recorder)
