"""What the ticket lifecycle needs to know about the site, as plain values (issue 5).

`gateway.ticketing` may not import the config package (DESIGN.md section 1), so the composition
root maps `TicketingConfig` and each device's `AssetInfo` onto these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.records import Priority

HOUR = 3600.0
DAY = 24 * HOUR
UNASSIGNED_AREA = "unassigned"


@dataclass(frozen=True, slots=True)
class SlaTarget:
    respond_s: float
    resolve_s: float


DEFAULT_SLA: Mapping[Priority, SlaTarget] = {
    Priority.P0: SlaTarget(5 * 60, HOUR),
    Priority.P1: SlaTarget(15 * 60, 2 * HOUR),
    Priority.P2: SlaTarget(HOUR, 8 * HOUR),
    Priority.P3: SlaTarget(4 * HOUR, 2 * DAY),
}


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """The numbers of issue 5; the defaults are the ones the issue names."""

    sla: Mapping[Priority, SlaTarget] = field(default_factory=lambda: dict(DEFAULT_SLA))
    # ISA-18.2 chattering: this many active/clear cycles within the window.
    chatter_cycles: int = 3
    chatter_window_s: float = 60.0
    # ISA-18.2 flood: more than `flood_threshold` new conditions per window in one area.
    flood_threshold: int = 10
    flood_window_s: float = 600.0
    flood_end_below: int = 5
    flood_p0_per_hour: int = 50
    # An incident publishes a member update at most this often (a storm is hundreds of them).
    incident_update_interval_s: float = 60.0
    stale_after_s: float = DAY
    max_shelve_s: float = 8 * HOUR
    verification_window_s: float = DAY
    verification_tolerance: float = 0.15
    reopen_within_s: float = 72 * HOUR
    recurrence_within_s: float = 30 * DAY
    evidence_window_s: float = 600.0
    safety_detectors: frozenset[str] = frozenset()
    cmms_codes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def sla_for(self, priority: Priority) -> SlaTarget:
        return self.sla.get(priority) or DEFAULT_SLA[priority]


@dataclass(frozen=True, slots=True)
class AssetProfile:
    """Routing and run-state facts of one asset, from its device YAML."""

    asset: str
    asset_class: str = "generic"
    area: str = ""
    line: str = ""
    business_line: str = ""
    region: str = ""
    skill: str = ""
    # Speed or run-state tag; None means the gateway cannot tell, so the asset counts as running.
    run_tag: str | None = None
    run_above: float = 0.0
    # The asset's scalar tags: the related tags summarised as ticket evidence.
    tags: tuple[str, ...] = ()

    @property
    def flood_area(self) -> str:
        return self.area or UNASSIGNED_AREA

    def routing(self, site: str) -> dict[str, str]:
        return {
            "site": site,
            "area": self.area,
            "line": self.line,
            "business_line": self.business_line,
            "region": self.region,
            "skill": self.skill,
            "asset_class": self.asset_class,
        }
