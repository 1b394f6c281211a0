"""What the ticket lifecycle needs to know about the site, as plain values (issue 5).

`gateway.ticketing` may not import the config package (DESIGN.md section 1), so the composition
root maps `TicketingConfig` and each device's `AssetInfo` onto these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.records import Priority

UNASSIGNED_AREA = "unassigned"


@dataclass(frozen=True, slots=True)
class SlaTarget:
    respond_s: float
    resolve_s: float


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """The site's ticket policy in seconds. Its defaults are written once, in the configuration
    models (`gateway.config.models.TicketingConfig`); `gateway.assembly.ticketing` converts."""

    # Respond-by / resolve-by for every priority.
    sla: Mapping[Priority, SlaTarget]
    # ISA-18.2 chattering: this many active/clear cycles within the window.
    chatter_cycles: int
    chatter_window_s: float
    # ISA-18.2 flood: more than `flood_threshold` new conditions per window in one area.
    flood_threshold: int
    flood_window_s: float
    flood_end_below: int
    flood_p0_per_hour: int
    stale_after_s: float
    max_shelve_s: float
    verification_window_s: float
    verification_tolerance: float
    reopen_within_s: float
    recurrence_within_s: float
    evidence_window_s: float
    safety_detectors: frozenset[str]
    cmms_codes: Mapping[str, Mapping[str, str]]
    # An incident publishes a member update at most this often (a storm is hundreds of them).
    incident_update_interval_s: float = 60.0
    # Storms by signature (issue 13, see `groups`): the labels of the group key, more than
    # `group_threshold` new conditions of one key within `group_window_s` are one incident,
    # and the short hold that lets a burst open one incident instead of a ticket each.
    group_by: tuple[str, ...] = ("site", "fault_code", "asset_class")
    group_threshold: int = 10
    group_window_s: float = 86_400.0
    group_wait_s: float = 30.0

    def sla_for(self, priority: Priority) -> SlaTarget:
        return self.sla[priority]


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
    # Tags derived by its detectors (vibration features) -> the least rise, in the tag's
    # unit, that fails verification after a repair; only a rise of these fails.
    rise_floors: Mapping[str, float] = field(default_factory=dict)
    # Grouping labels (issue 13): the supply it hangs on and the link (PLC, gateway, bus) it
    # is read through; the assets it is fed or driven by (`depends_on` in the device YAML).
    feed: str = ""
    plc: str = ""
    depends_on: tuple[str, ...] = ()

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
