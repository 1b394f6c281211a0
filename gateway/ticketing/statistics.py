"""What the ticket service counts, and the alarm-management KPIs built from it.

`Counters` is the running tally the other ticketing modules add to; `statistics()` and `kpis()`
of the service read it. Counters live in memory: they describe this run of the gateway; the
maintenance KPIs that must survive a restart are computed from the tickets (`outcomes`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.records import Priority, Shelving, Ticket
from gateway.ticketing.noise import ConditionFlag
from gateway.ticketing.storms import FloodTracker

MAX_ADVISORIES = 50
ADVISORIES_IN_KPIS = 10


@dataclass(frozen=True, slots=True)
class TicketServiceStatistics:
    open_tickets: int
    active_conditions: int
    findings: int
    opened: int
    enriched: int  # re-triggers merged into an open ticket instead of a second one
    escalated: int
    conditions_cleared: int
    acknowledged: int
    commit_failures: int
    suppressed: int = 0  # active findings that opened nothing (stopped, upstream, maintenance)
    shelved_hits: int = 0
    chattering: int = 0
    recurrences: int = 0  # new tickets with `recurrence_of` plus reopened ones
    reopened: int = 0
    renotified: int = 0
    incidents: int = 0
    flood_members: int = 0
    verified_pass: int = 0
    verified_fail: int = 0


@dataclass(frozen=True, slots=True)
class Advisory:
    """A tuning advisory for the health topic (chattering: widen the deadband or delays)."""

    key: str
    kind: str
    ts: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "ts": self.ts, "message": self.message}


@dataclass(slots=True)
class Counters:
    findings: int = 0
    opened: int = 0
    enriched: int = 0
    escalated: int = 0
    cleared: int = 0
    acknowledged: int = 0
    commit_failures: int = 0
    suppressed: int = 0
    shelved_hits: int = 0
    recurrences: int = 0
    reopened: int = 0
    renotified: int = 0  # escalation messages (warnings, breaches, levels, unattended)
    incidents: int = 0
    flood_members: int = 0
    verified_pass: int = 0
    verified_fail: int = 0
    escalations: dict[str, int] = field(default_factory=dict)  # by event kind, this run
    advisories: list[Advisory] = field(default_factory=list)

    def advise(self, advisory: Advisory) -> None:
        self.advisories = [*self.advisories, advisory][-MAX_ADVISORIES:]


def count_flag(flags: Mapping[str, set[ConditionFlag]], flag: ConditionFlag) -> int:
    return sum(1 for held in flags.values() if flag in held)


def statistics(
    counters: Counters,
    *,
    open_tickets: int,
    active_conditions: int,
    flags: Mapping[str, set[ConditionFlag]],
) -> TicketServiceStatistics:
    c = counters
    return TicketServiceStatistics(
        open_tickets=open_tickets,
        active_conditions=active_conditions,
        findings=c.findings,
        opened=c.opened,
        enriched=c.enriched,
        escalated=c.escalated,
        conditions_cleared=c.cleared,
        acknowledged=c.acknowledged,
        commit_failures=c.commit_failures,
        suppressed=c.suppressed,
        shelved_hits=c.shelved_hits,
        chattering=count_flag(flags, ConditionFlag.CHATTERING),
        recurrences=c.recurrences,
        reopened=c.reopened,
        renotified=c.renotified,
        incidents=c.incidents,
        flood_members=c.flood_members,
        verified_pass=c.verified_pass,
        verified_fail=c.verified_fail,
    )


def kpis(
    counters: Counters,
    *,
    now: float,
    open_tickets: Mapping[str, Ticket],
    flags: Mapping[str, set[ConditionFlag]],
    shelves: Mapping[str, Shelving],
    storms: FloodTracker,
    outcomes: Mapping[str, Any],
) -> dict[str, Any]:
    """Alarm-management KPIs at the edge and the maintenance KPIs of the tickets' outcomes
    (`outcomes`: persisted, over its window), as a plain JSON-able dict for
    the health topic and `edge-gateway status`."""
    priorities = Counter(t.priority.value for t in open_tickets.values())
    return {
        "conditions_per_10min": storms.per_area_in_window(now),
        "floods_active": sorted(f.area for f in storms.floods()),
        "floods_started": storms.floods_started,
        "time_in_flood_s": round(storms.time_in_flood_s(now), 1),
        "chattering": count_flag(flags, ConditionFlag.CHATTERING),
        "stale": count_flag(flags, ConditionFlag.STALE),
        "shelved": sum(1 for s in shelves.values() if s.active(now)),
        "suppressed": count_flag(flags, ConditionFlag.SUPPRESSED),
        "out_of_service": count_flag(flags, ConditionFlag.OUT_OF_SERVICE),
        "top10_share": storms.top_share(now),
        "priority_distribution": {p.value: priorities.get(p.value, 0) for p in Priority},
        "open_tickets": len(open_tickets),
        "opened": counters.opened,
        "recurrences": counters.recurrences,
        "renotified": counters.renotified,
        "incidents": counters.incidents,
        "escalations": dict(sorted(counters.escalations.items())),
        "advisories": [a.as_dict() for a in counters.advisories[-ADVISORIES_IN_KPIS:]],
        **outcomes,
    }
