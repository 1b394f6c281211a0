"""What became of the tickets: eradication, repeat reports, response and resolution
times, first-time fix, SLA rates. The KPIs an operations manager asks for.

Every figure is computed from the tickets themselves (the rows of state.db, loaded at start for
the window and kept up to date on every commit), so it survives a restart and never counts
twice. Definitions (docs/TICKETS.md, KPIs):

- a *resolution* is a close (CLOSED, not CANCELLED); a ticket reopened and closed again has
  two. Its time is its close time.
- a resolution is *re-reported* when its signature (the dedup key: site, asset, fault code,
  detector) comes back within `eradication_after_s` (30 days) of it: the ticket reopened
  (within 72 h) or a new ticket names it in `recurrence_of`.
- **repeat-report rate** = re-reported resolutions / resolutions in the window (closed within
  `kpi_window_s`, default 30 days). The brief's target: at most 8 %.
- **eradication rate** = eradicated / resolutions whose 30 days have passed, closed within the
  window before that. A resolution is *eradicated* (event `eradicated` on the closed ticket)
  when 30 days passed without a re-report.
- **first-time fix** = tickets whose first verification after a repair passed / tickets with a
  verification result.
- mean time to respond (open to a person's `accept`/`start`) and to resolve (open to the repair
  reported), resolve-SLA rate, overdue share of open tickets, open tickets by priority and age.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.records import Priority, Ticket, TicketState
from gateway.ticketing import escalation
from gateway.ticketing.deadlines import DeadlineQueue
from gateway.ticketing.policy import LifecyclePolicy

AGE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("lt_1h", 3600.0),
    ("1h_8h", 8 * 3600.0),
    ("8h_24h", 86400.0),
    ("1d_7d", 7 * 86400.0),
    ("ge_7d", float("inf")),
)


@dataclass(frozen=True, slots=True)
class Resolution:
    ticket_id: str
    group: tuple[str, str]  # (site, asset class)
    closed_at: float
    re_reported: bool
    eradicated: bool


class Outcomes:
    def __init__(self, policy: LifecyclePolicy) -> None:
        self._policy = policy
        self._tickets: dict[str, Ticket] = {}
        # closed ticket id -> when a new ticket named it in `recurrence_of`
        self._recurred: dict[str, float] = {}
        # closed ticket id -> when its eradication period ends, so that the check looks only
        # at the closes that are due, not at every ticket of the window
        self.eradication_at: DeadlineQueue[str] = DeadlineQueue()

    @property
    def horizon_s(self) -> float:
        """How far back the figures look: the window and the eradication period before it."""
        return self._policy.kpi_window_s + self._policy.eradication_after_s

    def load(self, tickets: Iterable[Ticket]) -> None:
        for ticket in tickets:
            self.observe(ticket)

    def observe(self, ticket: Ticket) -> None:
        """A ticket as just committed."""
        self._tickets[ticket.id] = ticket
        if _awaits_eradication(ticket):
            assert ticket.closed_at is not None
            due = ticket.closed_at + self._policy.eradication_after_s
            self.eradication_at.schedule(ticket.id, due)
        else:
            self.eradication_at.cancel(ticket.id)
        of = ticket.attributes.get("recurrence_of")
        if isinstance(of, str) and of not in self._recurred:
            self._recurred[of] = ticket.opened_at

    def prune(self, now: float) -> None:
        horizon = now - self.horizon_s
        for ticket_id, ticket in list(self._tickets.items()):
            if not ticket.state.is_open and (ticket.closed_at or ticket.opened_at) < horizon:
                del self._tickets[ticket_id]
                self._recurred.pop(ticket_id, None)
                self.eradication_at.cancel(ticket_id)

    # --- eradication and quality ----------------------------------------------------------------

    def eradicated_by(self, ticket_id: str, now: float) -> Ticket | None:
        """The closed ticket, due in `eradication_at`, if its 30 days passed without its
        signature coming back; one not quite due yet is scheduled again."""
        ticket = self._tickets.get(ticket_id)
        if ticket is None or not _awaits_eradication(ticket) or self._came_back(ticket):
            return None
        assert ticket.closed_at is not None
        after = self._policy.eradication_after_s
        if now - ticket.closed_at < after:  # due by the queue's sum, not yet by this test
            self.eradication_at.schedule(ticket_id, ticket.closed_at + after)
            return None
        return ticket

    def same_fault_on_model(self, model: str, fault_code: str, now: float) -> list[Ticket]:
        """Tickets of this fault code on assets of this model opened within the window."""
        since = now - self._policy.quality_window_s
        return [
            t
            for t in self._tickets.values()
            if t.fault_code == fault_code
            and t.opened_at >= since
            and _routing(t).get("model") == model
        ]

    def _came_back(self, ticket: Ticket) -> bool:
        recurred = self._recurred.get(ticket.id)
        return (
            recurred is not None
            and ticket.closed_at is not None
            and recurred - ticket.closed_at <= self._policy.eradication_after_s
        )

    # --- figures --------------------------------------------------------------------------------

    def resolutions(self) -> list[Resolution]:
        out: list[Resolution] = []
        for t in self._tickets.values():
            group = (t.site, str(_routing(t).get("asset_class", "generic")))
            for previous in _previous_closes(t):
                # Reopened: that resolution came back (within the reopen window, 72 h).
                out.append(Resolution(t.id, group, previous, True, False))
            if t.state is TicketState.CLOSED and t.closed_at is not None:
                out.append(
                    Resolution(
                        t.id, group, t.closed_at, self._came_back(t), "eradicated" in t.attributes
                    )
                )
        return out

    def kpis(self, now: float, open_tickets: Mapping[str, Ticket]) -> dict[str, Any]:
        policy = self._policy
        window_start = now - policy.kpi_window_s
        resolutions = self.resolutions()
        in_window = [r for r in resolutions if r.closed_at >= window_start]
        matured = [
            r
            for r in resolutions
            if window_start - policy.eradication_after_s
            <= r.closed_at
            <= now - policy.eradication_after_s
        ]
        recent = [t for t in self._tickets.values() if t.opened_at >= window_start]
        responses = [_figure(t, "response") for t in recent]
        resolved = [
            r
            for r in (_figure(t, "resolved") for t in self._tickets.values())
            if r is not None and float(r["at"]) >= window_start
        ]
        verified = [
            t.attributes["first_verification"]
            for t in self._tickets.values()
            if t.attributes.get("first_verification") in ("pass", "fail")
            and (t.closed_at or now) >= window_start
        ]
        overdue = sum(1 for t in open_tickets.values() if escalation.overdue(t, policy, now))
        by_group: dict[str, dict[str, Any]] = {}
        for site, asset_class in sorted({r.group for r in in_window + matured}):
            mine = [r for r in in_window if r.group == (site, asset_class)]
            ripe = [r for r in matured if r.group == (site, asset_class)]
            by_group[f"{site}/{asset_class}"] = {
                "site": site,
                "asset_class": asset_class,
                **_rates(mine, ripe),
            }
        return {
            "window_days": policy.kpi_window_s / 86400.0,
            **_rates(in_window, matured),
            "by_site_and_class": by_group,
            "mean_time_to_respond_s": _mean(float(r["s"]) for r in responses if r is not None),
            "responses": sum(1 for r in responses if r is not None),
            "mean_time_to_resolve_s": _mean(float(r["s"]) for r in resolved),
            "resolved": len(resolved),
            "resolve_sla_rate": _share(
                sum(1 for r in resolved if r.get("within") is True), len(resolved)
            ),
            "first_time_fix_rate": _share(verified.count("pass"), len(verified)),
            "overdue_share": _share(overdue, len(open_tickets)),
            "overdue": overdue,
            "unattended": sum(1 for t in recent if "unattended" in t.attributes),
            "open_by_priority_and_age": _open_by_priority_and_age(open_tickets.values(), now),
            "quality_advisories": self.quality_advisories(now),
        }

    def quality_advisories(self, now: float) -> list[dict[str, Any]]:
        """Asset model + fault code seen `quality_repeats` times or more within the window."""
        since = now - self._policy.quality_window_s
        seen: dict[tuple[str, str], set[str]] = defaultdict(set)
        counts: Counter[tuple[str, str]] = Counter()
        for t in self._tickets.values():
            model = _routing(t).get("model")
            if isinstance(model, str) and model and t.opened_at >= since:
                counts[(model, t.fault_code)] += 1
                seen[(model, t.fault_code)].add(t.asset)
        return [
            {
                "model": model,
                "fault_code": fault,
                "count": n,
                "assets": sorted(seen[(model, fault)]),
            }
            for (model, fault), n in sorted(counts.items())
            if n >= self._policy.quality_repeats
        ]


def _awaits_eradication(ticket: Ticket) -> bool:
    return (
        ticket.state is TicketState.CLOSED
        and ticket.closed_at is not None
        and "eradicated" not in ticket.attributes
    )


def _rates(in_window: list[Resolution], matured: list[Resolution]) -> dict[str, Any]:
    re_reported = sum(1 for r in in_window if r.re_reported)
    eradicated = sum(1 for r in matured if r.eradicated)
    return {
        "resolutions": len(in_window),
        "re_reported": re_reported,
        "repeat_report_rate": _share(re_reported, len(in_window)),
        "eradication_checked": len(matured),
        "eradicated": eradicated,
        "eradication_rate": _share(eradicated, len(matured)),
    }


def _open_by_priority_and_age(tickets: Iterable[Ticket], now: float) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for t in tickets:
        age = now - t.opened_at
        bucket = next(name for name, limit in AGE_BUCKETS if age < limit)
        counts[t.priority.value][bucket] += 1
    return {
        p.value: {name: counts[p.value].get(name, 0) for name, _ in AGE_BUCKETS} for p in Priority
    }


def _previous_closes(ticket: Ticket) -> list[float]:
    closes = ticket.attributes.get("previous_closes", [])
    return (
        [float(c) for c in closes if isinstance(c, int | float)] if isinstance(closes, list) else []
    )


def _routing(ticket: Ticket) -> Mapping[str, Any]:
    routing = ticket.attributes.get("routing", {})
    return routing if isinstance(routing, Mapping) else {}


def _figure(ticket: Ticket, name: str) -> Mapping[str, Any] | None:
    value = ticket.attributes.get(name)
    if isinstance(value, Mapping) and isinstance(value.get("s"), int | float):
        return value
    return None


def _mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return sum(items) / len(items) if items else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None
