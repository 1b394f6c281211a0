"""What the ticket lifecycle needs to know about the site, as plain values.

`gateway.ticketing` may not import the config package (DESIGN.md section 1), so the composition
root maps `TicketingConfig` and each device's `AssetInfo` onto these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.records import Priority
from gateway.ticketing.calendar import AllHours, Calendar

UNASSIGNED_AREA = "unassigned"


@dataclass(frozen=True, slots=True)
class SlaTarget:
    """One priority's row of the SLA table and its escalation policy.

    Each clock (response, resolution) warns `warn_before` of its target before the deadline,
    reports the breach to `levels[0]`, then every `repeat_s` the next level, and after the last
    level one `unattended` event; then the ticket is silent until a person acts on it. The
    defaults are the configuration model's (`gateway.config.models.SlaTarget`)."""

    respond_s: float
    resolve_s: float
    warn_before: float  # share of the target: 0.2 warns at 80 % of it
    levels: tuple[str, ...]
    repeat_s: float
    working_time: bool  # count only the site's working hours (lower priorities)


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """The site's ticket policy in seconds. No field has a default here: the defaults are
    written once, in the configuration models (`gateway.config.models.TicketingConfig`), and
    `gateway.assembly.ticketing` converts every field."""

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
    incident_update_interval_s: float
    # Storms by signature (see `groups`): the labels of the group key, more than
    # `group_threshold` new conditions of one key within `group_window_s` are one incident,
    # and the short hold that lets a burst open one incident instead of a ticket each.
    group_by: tuple[str, ...]
    group_threshold: int
    group_window_s: float
    group_wait_s: float
    # The site's working hours; None: every second counts, for every priority.
    calendar: Calendar | None
    # ON_HOLD reasons that stop the resolution clock (waiting on the requester's side).
    hold_pauses: Mapping[str, bool]
    # Sign-off: a repair is closed by `confirm` from one of these actors (empty: not asked).
    require_signoff: bool
    signoff_actors: frozenset[str]
    cause_codes: Mapping[str, str]
    remedy_codes: Mapping[str, str]
    # A close not followed by the same signature within this is `eradicated` (the brief: 30 d).
    eradication_after_s: float
    # KPIs over tickets resolved within this window.
    kpi_window_s: float
    # The same fault code on one asset model this many times within the window: advisory.
    quality_repeats: int
    quality_window_s: float

    def sla_for(self, priority: Priority) -> SlaTarget:
        return self.sla[priority]

    def clock_of(self, priority: Priority) -> Calendar:
        """The time an SLA clock of this priority counts."""
        if self.calendar is not None and self.sla_for(priority).working_time:
            return self.calendar
        return AllHours()


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
    # Grouping labels: the supply it hangs on and the link (PLC, gateway, bus) it
    # is read through; the assets it is fed or driven by (`depends_on` in the device YAML).
    feed: str = ""
    plc: str = ""
    depends_on: tuple[str, ...] = ()
    # Manufacturer model: the same fault on one model again and again is a quality matter.
    model: str = ""

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
        } | ({"model": self.model} if self.model else {})
