"""Alarm floods (ANSI/ISA-18.2 section 16.5): more than 10 new conditions in 10 minutes
in one area is a flood. The flood opens one incident for the area; while it lasts, new
conditions in that area become members of the incident instead of separate tickets. It ends when
fewer than 5 arrive in 10 minutes. Pure bookkeeping: the ticket service decides what to publish.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HOUR = 3600.0  # the maintenance organisations count tickets per clock hour
MAX_UNSAVED = 10_000


@dataclass(slots=True)
class FloodMember:
    key: str
    asset: str
    fault_code: str
    first_seen: float
    arrivals: int = 1


@dataclass(slots=True)
class AreaFlood:
    area: str
    started_at: float
    members: dict[str, FloodMember] = field(default_factory=dict)
    # Open tickets of the area whose re-raises and clears were folded quietly during the flood;
    # each gets one catch-up update when it ends.
    quieted: set[str] = field(default_factory=set)
    # New conditions folded into the incident instead of opening a ticket of their own.
    folded: set[str] = field(default_factory=set)
    incident_key: str | None = None
    published_members: int = 0
    published_at: float = float("-inf")
    # For the journal: members changed since the last save (written one row each, so the cost
    # of a new member does not grow with the flood).
    changed: set[str] = field(default_factory=set)
    total_arrivals: int = 0

    @property
    def arrivals(self) -> int:
        return self.total_arrivals

    def add(self, key: str, asset: str, fault_code: str, ts: float) -> None:
        member = self.members.get(key)
        if member is None:
            self.members[key] = FloodMember(key, asset, fault_code, ts)
        else:
            member.arrivals += 1
        self.total_arrivals += 1
        self.changed.add(key)

    def fold(self, key: str) -> None:
        self.folded.add(key)
        self.changed.add(key)

    def quiet(self, key: str) -> None:
        if key not in self.quieted:
            self.quieted.add(key)
            self.changed.add(key)

    def suspected_root_cause(self) -> FloodMember:
        """The earliest member: in a cascade, the first alarm is the best guess at the cause."""
        return min(self.members.values(), key=lambda m: (m.first_seen, m.key))

    def summary(self, top: int = 5) -> dict[str, Any]:
        ranked = sorted(self.members.values(), key=lambda m: (-m.arrivals, m.first_seen))
        root = self.suspected_root_cause()
        return {
            "area": self.area,
            "started_at": self.started_at,
            "member_count": len(self.members),
            "arrivals": self.arrivals,
            "top_members": [
                {"key": m.key, "asset": m.asset, "fault_code": m.fault_code, "arrivals": m.arrivals}
                for m in ranked[:top]
            ],
            "suspected_root_cause": {
                "key": root.key,
                "asset": root.asset,
                "fault_code": root.fault_code,
                "first_seen": root.first_seen,
                "named_by": "arrival_order",
            },
        }


@dataclass(frozen=True, slots=True)
class Arrival:
    ts: float
    key: str
    asset: str
    fault_code: str


class FloodTracker:
    def __init__(self, threshold: int, window_s: float, end_below: int, p0_per_hour: int) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self.end_below = end_below
        self.p0_per_hour = p0_per_hour
        self._arrivals: dict[str, deque[Arrival]] = {}
        # Arrival times of the flood window and of the last hour, per area: counted by their
        # length after pruning the front, so a count never walks the whole storm.
        self._window_ts: dict[str, deque[float]] = {}
        self._hour_ts: dict[str, deque[float]] = {}
        self._floods: dict[str, AreaFlood] = {}
        self._flood_seconds = 0.0  # of floods that ended
        self.floods_started = 0
        # Arrivals not yet handed to the journal, which keeps them in state.db (see `journal`).
        self._unsaved: list[tuple[str, Arrival]] = []

    def arrive(self, area: str, arrival: Arrival) -> tuple[AreaFlood | None, bool]:
        """Count a new condition. Returns the area's flood (None: no flood) and whether this
        arrival started it. A starting flood takes the window's earlier arrivals as members."""
        arrivals = self._arrivals.setdefault(area, deque())
        arrivals.append(arrival)
        self._count(area, arrival.ts)
        self._unsaved.append((area, arrival))
        if len(self._unsaved) > MAX_UNSAVED:  # state.db refusing for long: keep the newest
            del self._unsaved[0]
        self._prune(arrivals, arrival.ts)
        flood = self._floods.get(area)
        if flood is not None:
            flood.add(arrival.key, arrival.asset, arrival.fault_code, arrival.ts)
            return flood, False
        if self.in_window(area, arrival.ts) <= self.threshold:
            return None, False
        flood = AreaFlood(area, arrival.ts)
        for earlier in arrivals:
            if earlier.ts >= arrival.ts - self.window_s:
                flood.add(earlier.key, earlier.asset, earlier.fault_code, earlier.ts)
        self._floods[area] = flood
        self.floods_started += 1
        return flood, True

    def in_window(self, area: str, now: float) -> int:
        return _since(self._window_ts.get(area), now - self.window_s)

    def per_hour(self, area: str, now: float) -> int:
        return _since(self._hour_ts.get(area), now - HOUR)

    def _count(self, area: str, ts: float) -> None:
        for counts in (self._window_ts, self._hour_ts):
            times = counts.setdefault(area, deque())
            if times and ts < times[-1]:  # out of order (rare): keep the deque sorted
                ordered = sorted([*times, ts])
                times.clear()
                times.extend(ordered)
            else:
                times.append(ts)

    def flood(self, area: str) -> AreaFlood | None:
        return self._floods.get(area)

    def floods(self) -> list[AreaFlood]:
        return list(self._floods.values())

    def end_floods(self, now: float) -> list[AreaFlood]:
        """Floods whose area had fewer than `end_below` new conditions in the last window."""
        ended = []
        for area, flood in list(self._floods.items()):
            lasted = now - flood.started_at >= self.window_s
            if lasted and self.in_window(area, now) < self.end_below:
                del self._floods[area]
                self._flood_seconds += now - flood.started_at
                ended.append(flood)
        return ended

    def time_in_flood_s(self, now: float) -> float:
        return self._flood_seconds + sum(now - f.started_at for f in self._floods.values())

    def per_area_in_window(self, now: float) -> dict[str, int]:
        return {area: self.in_window(area, now) for area in sorted(self._arrivals)}

    def top_share(self, now: float, top: int = 10) -> float | None:
        """ISA-18.2 KPI: share of the last hour's new conditions due to the `top` most frequent."""
        counts: Counter[str] = Counter(
            a.key for arrivals in self._arrivals.values() for a in arrivals if a.ts >= now - HOUR
        )
        total = sum(counts.values())
        if total == 0:
            return None
        return sum(n for _, n in counts.most_common(top)) / total

    @property
    def keep_s(self) -> float:
        """How long arrivals count: the flood window, and an hour for P0 and the KPIs."""
        return max(self.window_s, HOUR)

    def unsaved(self) -> list[tuple[str, Arrival]]:
        return list(self._unsaved)

    def mark_saved(self, count: int) -> None:
        """The first `count` of `unsaved()` are in state.db now."""
        del self._unsaved[:count]

    def restore(self, floods: Iterable[AreaFlood], arrivals: Iterable[tuple[str, Arrival]]) -> None:
        """Take back what state.db kept across a restart: floods in progress, recent arrivals."""
        for area, arrival in sorted(arrivals, key=lambda item: item[1].ts):
            self._arrivals.setdefault(area, deque()).append(arrival)
            self._count(area, arrival.ts)
        for flood in floods:
            self._floods[flood.area] = flood

    def _prune(self, arrivals: deque[Arrival], now: float) -> None:
        while arrivals and arrivals[0].ts < now - self.keep_s:
            arrivals.popleft()


def _since(times: deque[float] | None, start: float) -> int:
    """How many of `times` (sorted) are at or after `start`; drops the older ones, as every
    later question asks about a later start."""
    if not times:
        return 0
    while times and times[0] < start:
        times.popleft()
    return len(times)
