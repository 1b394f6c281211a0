"""The ticket service and its central commands from `gateway.yaml`'s `ticketing:` section and
the device files' asset descriptions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace

from gateway.assembly.plant import ConfiguredDevice, topology_links
from gateway.config.loader import LoadedConfig
from gateway.config.models import TicketingConfig, WorkingCalendarConfig
from gateway.core.clock import Clock
from gateway.core.interfaces import Detector, MessageEncoder
from gateway.core.records import TagKind
from gateway.store import StateDatabase
from gateway.ticketing.calendar import DAY_NAMES, WorkingCalendar
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.policy import AssetProfile, LifecyclePolicy, SlaTarget
from gateway.ticketing.service import TicketService

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


def lifecycle_policy(cfg: TicketingConfig) -> LifecyclePolicy:
    """`ticketing:` as the ticketing package's plain values, in seconds. The defaults live in
    the configuration models only; an SLA table that names some priorities keeps the default
    targets for the others."""
    default_sla = TicketingConfig.model_fields["sla"].get_default(call_default_factory=True)
    sla = {**default_sla, **cfg.sla}
    return LifecyclePolicy(
        sla={
            p: SlaTarget(
                t.respond_min * MINUTE,
                t.resolve_min * MINUTE,
                warn_before=t.warn_before_pct / 100.0,
                levels=tuple(t.levels),
                repeat_s=t.repeat_min * MINUTE,
                working_time=t.working_time,
            )
            for p, t in sla.items()
        },
        chatter_cycles=cfg.chatter_cycles,
        chatter_window_s=cfg.chatter_window_s,
        flood_threshold=cfg.flood_threshold,
        flood_window_s=cfg.flood_window_s,
        flood_end_below=cfg.flood_end_below,
        flood_p0_per_hour=cfg.flood_p0_per_hour,
        stale_after_s=cfg.stale_after_h * HOUR,
        max_shelve_s=cfg.max_shelve_h * HOUR,
        verification_window_s=cfg.verification_window_h * HOUR,
        verification_tolerance=cfg.verification_tolerance,
        reopen_within_s=cfg.reopen_within_h * HOUR,
        recurrence_within_s=cfg.recurrence_within_days * DAY,
        evidence_window_s=cfg.evidence_window_s,
        safety_detectors=frozenset(cfg.safety_detectors),
        cmms_codes=cfg.cmms_codes,
        group_by=tuple(cfg.group_by),
        group_threshold=cfg.group_threshold,
        group_window_s=cfg.group_window_h * HOUR,
        group_wait_s=cfg.group_wait_s,
        incident_update_interval_s=cfg.incident_update_interval_s,
        calendar=working_calendar(cfg.working_calendar),
        hold_pauses={str(k): v for k, v in cfg.hold_stops_clock.items()},
        require_signoff=cfg.require_signoff,
        signoff_actors=frozenset(cfg.signoff_actors),
        cause_codes=dict(cfg.cause_codes),
        remedy_codes=dict(cfg.remedy_codes),
        eradication_after_s=cfg.eradication_days * DAY,
        kpi_window_s=cfg.kpi_window_days * DAY,
        quality_repeats=cfg.quality_repeats,
        quality_window_s=cfg.quality_window_days * DAY,
    )


def working_calendar(cfg: WorkingCalendarConfig | None) -> WorkingCalendar | None:
    if cfg is None:
        return None

    def seconds(hhmm: str) -> int:
        hours, minutes = hhmm.split(":")
        return int(hours) * 3600 + int(minutes) * 60

    return WorkingCalendar(
        weekdays=frozenset(DAY_NAMES.index(d) for d in cfg.days),
        start_s=seconds(cfg.start),
        end_s=seconds(cfg.end),
        timezone=cfg.timezone,
        holidays=frozenset(dt.date.fromisoformat(d) for d in cfg.holidays),
    )


def asset_profiles(
    devices: Sequence[ConfiguredDevice], detectors: Sequence[Detector] = ()
) -> dict[str, AssetProfile]:
    """Routing fields, run-state tag and related tags of every asset, from the device YAML;
    the tags its detectors derive (vibration features) are related tags too, with the rise
    floor that verification after a repair applies to them."""
    profiles: dict[str, AssetProfile] = {}
    # The link (Modbus gateway, RTU line, OPC UA session, CAN bus) each asset is read through:
    # the `plc` label of ticket grouping.
    plcs = {asset: link.id for link in topology_links(devices) for asset in sorted(link.assets)}
    for device in devices:
        info = device.config.asset
        profile = AssetProfile(
            asset=device.spec.asset,
            asset_class=info.asset_class,
            area=info.area,
            line=info.line,
            business_line=info.business_line,
            region=info.region,
            skill=info.skill,
            model=info.model,
            run_tag=device.spec.signal_tag(info.run_signal) if info.run_signal else None,
            run_above=info.run_above,
            tags=tuple(t.id for t in device.tags if t.kind is TagKind.SCALAR),
            feed=info.feed,
            plc=plcs.get(device.spec.asset, ""),
            depends_on=tuple(info.depends_on),
        )
        known = profiles.get(profile.asset)
        # Several devices of one asset: their tags add up, and a field one file leaves empty
        # is taken from another (check-config has made sure that set fields agree).
        profiles[profile.asset] = profile if known is None else _merged(known, profile)
    for detector in detectors:
        derived = detector.derived_tags
        known = profiles.get(detector.asset)
        if derived and known is not None:
            profiles[detector.asset] = replace(
                known,
                tags=known.tags + tuple(tag.id for tag in derived),
                rise_floors={**known.rise_floors, **{t.id: t.rise_floor for t in derived}},
            )
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
        model=known.model or more.model,
        run_tag=known.run_tag or more.run_tag,
        run_above=known.run_above if known.run_tag else more.run_above,
        tags=known.tags + more.tags,
        feed=known.feed or more.feed,
        plc=known.plc or more.plc,
        depends_on=tuple(dict.fromkeys(known.depends_on + more.depends_on)),
    )


def ticket_service(
    loaded: LoadedConfig,
    devices: Sequence[ConfiguredDevice],
    detectors: Sequence[Detector],
    state: StateDatabase,
    encoder: MessageEncoder,
    clock: Clock,
) -> TicketService:
    cfg = loaded.gateway
    return TicketService(
        cfg.site,
        cfg.gateway_id,
        state,
        encoder,
        clock,
        policy=lifecycle_policy(cfg.ticketing),
        assets=asset_profiles(devices, detectors),
        links=topology_links(devices),
        knowledge=loaded.knowledge,
    )


def ticket_commands(
    loaded: LoadedConfig, tickets: TicketService, state: StateDatabase, clock: Clock
) -> TicketCommands:
    """What `cmd/<verb>` does: ids, revisions, actors, replays."""
    actors = frozenset(loaded.gateway.ticketing.command_actors)
    return TicketCommands(tickets, state.outbox, state.commands, clock, actors=actors)
