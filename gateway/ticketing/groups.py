"""Storms by signature and rate: new conditions that share a group key (by default
site + fault code + asset class; optionally line, area, feed, PLC) are counted over a sliding
window (24 h). More than `group_threshold` of them, at any pace, are one incident for the group;
later members are folded into it. A second new condition of a group within `group_wait_s` of
the first holds the group's next tickets until `group_wait_s` after the first (Alertmanager's
group_wait), so a burst opens one incident instead of a ticket each.

Pure bookkeeping, like `storms`: the ticket service (`incidents`) decides what to publish. Every
operation costs the same whatever the size of the storm: arrivals sit in deques pruned from the
front, and what changed is marked for the journal (`dirty`) instead of being compared whole.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.core.records import Finding
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.storms import HOUR, MAX_UNSAVED, Arrival, FloodMember

GROUP_DETECTOR = "storm-group"


def group_labels(
    labels: Iterable[str], site: str, profile: AssetProfile, fault_code: str
) -> dict[str, str]:
    values = {
        "site": site,
        "fault_code": fault_code,
        "asset_class": profile.asset_class,
        "line": profile.line,
        "area": profile.area,
        "feed": profile.feed,
        "plc": profile.plc,
    }
    return {label: values[label] for label in labels}


def group_key(labels: Mapping[str, str]) -> str:
    return ",".join(f"{name}={value}" for name, value in labels.items())


def group_asset(labels: Mapping[str, str]) -> str:
    """The incident's asset: the group's labels other than the site (`storm-<fault>-<class>`)."""
    parts = [value or "-" for name, value in labels.items() if name != "site"]
    return "storm-" + "-".join(parts or ["site"])


@dataclass(slots=True)
class RootCause:
    """The incident's suspected root cause and how it was named: `depends_on` (the member
    assets are fed or driven by it), `link` (they are read through it) or `arrival_order`
    (the earliest member: the fallback when the topology names nothing)."""

    key: str
    asset: str
    fault_code: str
    first_seen: float
    named_by: str
    upstream_of: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "asset": self.asset,
            "fault_code": self.fault_code,
            "first_seen": self.first_seen,
            "named_by": self.named_by,
            "upstream_of": self.upstream_of,
        }


@dataclass(slots=True)
class GroupStorm:
    key: str
    labels: dict[str, str]
    # New conditions of the window (24 h), and of the last hour (the P0 rule).
    arrivals: deque[Arrival] = field(default_factory=deque)
    hour: deque[float] = field(default_factory=deque)
    # group_wait: conditions held back until `hold_until` (their finding opens them then).
    hold_until: float | None = None
    held: dict[str, Finding] = field(default_factory=dict)
    # The incident, once the group crossed its threshold.
    incident_key: str | None = None
    started_at: float | None = None
    members: dict[str, FloodMember] = field(default_factory=dict)
    folded: set[str] = field(default_factory=set)
    # What raised each folded condition, `active` as it stands: whoever is still active when
    # the incident closes gets a ticket from it (after a restart too).
    faults: dict[str, Finding] = field(default_factory=dict)
    # Open tickets of members from before the incident (`linked`): their re-raises and clears
    # are folded quietly while it is open (`quieted`, like a flood's) and caught up once when
    # it closes.
    linked: set[str] = field(default_factory=set)
    quieted: set[str] = field(default_factory=set)
    areas: Counter[str] = field(default_factory=Counter)
    upstream_hits: Counter[str] = field(default_factory=Counter)
    root: RootCause | None = None
    predecessor: str | None = None
    published_members: int = 0
    published_at: float = float("-inf")
    published_root: str | None = None

    @property
    def total_arrivals(self) -> int:
        return sum(m.arrivals for m in self.members.values())

    def in_window(self) -> int:
        return len(self.arrivals)

    def per_hour(self) -> int:
        return len(self.hour)

    def earliest(self) -> FloodMember | None:
        if not self.members:
            return None
        return min(self.members.values(), key=lambda m: (m.first_seen, m.key))

    def summary(self, top: int = 5) -> dict[str, Any]:
        """The incident's payload block; costs the member count, so it is built only when the
        incident is published (at most once a minute)."""
        ranked = sorted(self.members.values(), key=lambda m: (-m.arrivals, m.first_seen))
        root = self.root.as_dict() if self.root is not None else None
        areas = sorted(a for a in self.areas if a)
        return {
            "kind": "group",
            "group": dict(self.labels),
            "scope": "site" if len(areas) != 1 else "area",
            "area": areas[0] if len(areas) == 1 else "",
            "areas": areas,
            "started_at": self.started_at,
            "member_count": len(self.members),
            "arrivals": self.total_arrivals,
            "in_window": self.in_window(),
            "top_members": [
                {"key": m.key, "asset": m.asset, "fault_code": m.fault_code, "arrivals": m.arrivals}
                for m in ranked[:top]
            ],
            "suspected_root_cause": root,
            **({"successor_of": self.predecessor} if self.predecessor else {}),
        }


class GroupTracker:
    def __init__(self, threshold: int, window_s: float, wait_s: float, p0_per_hour: int) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self.wait_s = wait_s
        self.p0_per_hour = p0_per_hour
        self._groups: dict[str, GroupStorm] = {}
        self.incidents_started = 0
        # For the journal: group headers and members changed since the last save, arrivals
        # not yet saved, and whether a change alters the handling of the next trigger.
        self.dirty: set[str] = set()
        self.dirty_members: set[tuple[str, str]] = set()
        self.unsaved: list[tuple[str, Arrival]] = []
        self.ended: set[str] = set()
        self.urgent = False
        self._swept_at = float("-inf")

    def group(self, key: str, labels: Mapping[str, str]) -> GroupStorm:
        storm = self._groups.get(key)
        if storm is None:
            storm = self._groups[key] = GroupStorm(key, dict(labels))
            self.ended.discard(key)
            self.mark(storm, urgent=False)
        return storm

    def get(self, key: str) -> GroupStorm | None:
        return self._groups.get(key)

    def groups(self) -> list[GroupStorm]:
        return list(self._groups.values())

    def with_incident(self) -> list[GroupStorm]:
        return [g for g in self._groups.values() if g.incident_key is not None]

    def arrive(self, storm: GroupStorm, arrival: Arrival) -> None:
        storm.arrivals.append(arrival)
        storm.hour.append(arrival.ts)
        self.unsaved.append((storm.key, arrival))
        if len(self.unsaved) > MAX_UNSAVED:  # state.db refusing for long: keep the newest
            del self.unsaved[0]
        self._prune(storm, arrival.ts)

    def over_threshold(self, storm: GroupStorm) -> bool:
        return storm.in_window() > self.threshold

    def p0(self, storm: GroupStorm, now: float) -> bool:
        self._prune(storm, now)
        return storm.per_hour() > self.p0_per_hour

    def starts_hold(self, storm: GroupStorm, ts: float) -> bool:
        """A second new condition within group_wait of the previous one starts a hold."""
        if self.wait_s <= 0 or len(storm.arrivals) < 2:
            return False
        previous = storm.arrivals[-2].ts
        if ts - previous > self.wait_s:
            return False
        storm.hold_until = previous + self.wait_s
        self.mark(storm, urgent=True)
        return True

    def hold(self, storm: GroupStorm, key: str, finding: Finding) -> None:
        storm.held[key] = finding
        self.mark_member(storm, key, urgent=True)

    def fold(self, storm: GroupStorm, key: str, finding: Finding) -> None:
        storm.folded.add(key)
        storm.faults[key] = finding
        self.mark_member(storm, key, urgent=True)

    def cleared(self, storm: GroupStorm, key: str) -> None:
        """A held or folded condition cleared: it is no longer a fault to ticket."""
        for findings in (storm.held, storm.faults):
            finding = findings.get(key)
            if finding is not None and finding.active:
                findings[key] = replace(finding, active=False)
                self.mark_member(storm, key, urgent=True)  # it decides: a ticket or not

    def raised(self, storm: GroupStorm, key: str, finding: Finding) -> None:
        known = storm.faults.get(key)
        if known is not None:
            storm.faults[key] = finding
            self.mark_member(storm, key, urgent=not known.active)

    def add_member(
        self, storm: GroupStorm, key: str, asset: str, fault_code: str, area: str, ts: float
    ) -> FloodMember:
        member = storm.members.get(key)
        if member is None:
            member = storm.members[key] = FloodMember(key, asset, fault_code, ts)
            storm.areas[area] += 1
            self.mark_member(storm, key, urgent=True)
        else:
            member.arrivals += 1
            self.mark_member(storm, key, urgent=False)
        return member

    def mark(self, storm: GroupStorm, *, urgent: bool) -> None:
        self.dirty.add(storm.key)
        self.urgent = self.urgent or urgent

    def mark_member(self, storm: GroupStorm, key: str, *, urgent: bool) -> None:
        self.dirty_members.add((storm.key, key))
        self.urgent = self.urgent or urgent

    def end_incident(self, storm: GroupStorm) -> None:
        """The incident was closed: the group counts on, but folds nothing more."""
        for key in list(storm.members) + list(storm.held):
            self.dirty_members.add((storm.key, key))
        storm.incident_key = None
        storm.started_at = None
        storm.members.clear()
        storm.folded.clear()
        storm.faults.clear()
        storm.linked.clear()
        storm.quieted.clear()
        storm.areas.clear()
        storm.upstream_hits.clear()
        storm.root = None
        storm.predecessor = None
        storm.published_members = 0
        storm.published_at = float("-inf")
        storm.published_root = None
        self.mark(storm, urgent=True)

    def forget_idle(self, now: float) -> None:
        """Groups with nothing in their window, no hold and no incident are dropped; looked
        for once a minute, as a window of hours needs no finer sweep."""
        if now - self._swept_at < 60.0:
            return
        self._swept_at = now
        for key, storm in list(self._groups.items()):
            self._prune(storm, now)
            if not storm.arrivals and storm.incident_key is None and not storm.held:
                del self._groups[key]
                self.dirty.discard(key)
                self.ended.add(key)

    def restore(
        self, storms: Iterable[GroupStorm], arrivals: Iterable[tuple[str, Arrival]]
    ) -> None:
        for storm in storms:
            self._groups[storm.key] = storm
        for key, arrival in sorted(arrivals, key=lambda item: item[1].ts):
            known = self._groups.get(key)
            if known is not None:
                known.arrivals.append(arrival)
                known.hour.append(arrival.ts)

    def _prune(self, storm: GroupStorm, now: float) -> None:
        while storm.arrivals and storm.arrivals[0].ts < now - self.window_s:
            storm.arrivals.popleft()
        while storm.hour and storm.hour[0] < now - HOUR:
            storm.hour.popleft()
