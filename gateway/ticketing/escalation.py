"""SLA clocks and the escalation policy with an end (issue 13), pure.

Every open ticket has two clocks, kept on the ticket (`attributes["escalation"]`, so they
survive a restart with it):

- **response**: from open (or reopen) to the first response of a *person*: `accept` or
  `start` carrying the actor. The central system's delivery `ack` is not a response.
- **resolution**: from open to the repair reported (`close`), paused while the ticket is
  ON_HOLD for a reason the site's `hold_pauses` names (waiting on the requester's side).

Each clock, per its priority's SLA row (`SlaTarget`): `sla_warning` when `warn_before` of the
target is left, `sla_breached` at the deadline (level 1, its target role or group in the
payload for the central system to route), `sla_escalated` every `repeat_s` to the next level,
and after the last level one `unattended` event for the ticket; then it is silent until a
person acts on it. So a ticket that nobody handles produces at most
`1 + 2 * (levels + 1) + 1` messages however long it waits (opened; warning, breach and
levels - 1 escalations per clock; one unattended), never a stream.

A clock's steps: 0 before the warning, 1 warned, 2 breached (level 1), 1 + k level k,
`levels + 1` all levels sent: the next is `unattended`. `next_at` is when the next step is due.
Priorities whose row says `working_time` count the site's working hours (`calendar`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.records import Priority, Ticket, TicketState
from gateway.ticketing.calendar import Calendar
from gateway.ticketing.policy import LifecyclePolicy, SlaTarget

RESPONSE, RESOLUTION = "response", "resolution"
CLOCKS = (RESPONSE, RESOLUTION)

# The event kinds this module produces (all go to `tickets/updated`).
ESCALATION_KINDS: Mapping[str, str] = {
    "sla_warning": "a clock (response or resolution) is near its deadline",
    "sla_breached": "a clock passed its deadline: level 1 of the escalation, with its target",
    "sla_escalated": "still breached a repeat interval later: the next level and its target",
    "unattended": "every level was escalated and nobody acted: reported once, then silence",
}

# States in which the resolution clock runs (REPAIRED and later: the work is reported done).
RESOLUTION_RUNS: frozenset[TicketState] = frozenset(
    {
        TicketState.OPENED,
        TicketState.ACKNOWLEDGED,
        TicketState.ASSIGNED,
        TicketState.IN_PROGRESS,
        TicketState.ON_HOLD,
        TicketState.REOPENED,
    }
)


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    detail: dict[str, Any]


def new_clocks(policy: LifecyclePolicy, priority: Priority, start: float) -> dict[str, Any]:
    """Both clocks started at `start` (open, reopen)."""
    sla = policy.sla_for(priority)
    calendar = policy.clock_of(priority)
    return {
        RESPONSE: _clock(calendar, start, sla.respond_s, sla.warn_before),
        RESOLUTION: _clock(calendar, start, sla.resolve_s, sla.warn_before),
        "priority": priority.value,
        "working_time": sla.working_time and policy.calendar is not None,
    }


def deadlines(clocks: Mapping[str, Any]) -> tuple[float, float]:
    """respond_by and resolve_by of the ticket's columns, from its clocks."""
    return float(clocks[RESPONSE]["due"]), float(clocks[RESOLUTION]["due"])


def clocks_of(ticket: Ticket, policy: LifecyclePolicy) -> dict[str, Any]:
    """The ticket's clocks; a ticket from before issue 13 gets them from its deadlines."""
    stored = ticket.attributes.get("escalation")
    if isinstance(stored, Mapping) and RESPONSE in stored and RESOLUTION in stored:
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in stored.items()}
    clocks = new_clocks(policy, ticket.priority, ticket.opened_at)
    for name, due in ((RESPONSE, ticket.respond_by), (RESOLUTION, ticket.resolve_by)):
        if due is not None:
            clock = clocks[name]
            shift = float(due) - clock["due"]
            clock["due"] += shift
            clock["next_at"] += shift
    return clocks


def due_steps(
    ticket: Ticket, policy: LifecyclePolicy, now: float
) -> tuple[dict[str, Any], list[Step]]:
    """The steps of the ticket's clocks due by `now` and its clocks after them.

    A clock that missed several steps (the gateway was down) reports only the latest, naming
    the ones it skipped: a catch-up is one message, not a burst."""
    clocks = clocks_of(ticket, policy)
    if "unattended" in ticket.attributes:
        return clocks, []
    sla = policy.sla_for(Priority(clocks.get("priority", ticket.priority.value)))
    calendar = policy.clock_of(Priority(clocks.get("priority", ticket.priority.value)))
    steps: list[Step] = []
    for name in CLOCKS:
        clock = clocks[name]
        if not _running(ticket, name, clock):
            continue
        passed: list[int] = []
        while clock.get("next_at") is not None and now >= float(clock["next_at"]):
            passed.append(int(clock["step"]))
            _advance(clock, calendar, sla)
        if not passed:
            continue
        step = _step(name, passed[-1], clock, sla, now)
        if len(passed) > 1:
            step.detail["skipped"] = [_kind(s, sla) for s in passed[:-1]]
        steps.append(step)
        if step.kind == "unattended":
            break  # one unattended per ticket, then silence
    return clocks, steps


def next_due(ticket: Ticket, policy: LifecyclePolicy) -> float | None:
    """When `due_steps` will next have a step for the ticket: the earliest `next_at` of its
    running clocks, or None while nothing can come (unattended, both clocks stopped or
    paused). A pure function of the ticket, so every committed change reschedules it."""
    if "unattended" in ticket.attributes:
        return None
    clocks = clocks_of(ticket, policy)
    times = [
        float(clocks[name]["next_at"]) for name in CLOCKS if _running(ticket, name, clocks[name])
    ]
    return min(times, default=None)


def stop(clocks: dict[str, Any], name: str, ts: float) -> dict[str, Any]:
    """The clock reached its goal (a person responded; the repair was reported)."""
    clock = dict(clocks[name])
    if "stopped_at" not in clock:
        clock |= {"stopped_at": ts, "within": ts <= float(clock["due"]), "next_at": None}
    return clocks | {name: clock}


def restart(clocks: dict[str, Any], policy: LifecyclePolicy, ts: float) -> dict[str, Any]:
    """Reopened: both clocks run again from now."""
    priority = Priority(clocks.get("priority", "P2"))
    return new_clocks(policy, priority, ts)


def pause(clocks: dict[str, Any], ts: float) -> dict[str, Any]:
    clock = dict(clocks[RESOLUTION])
    if "stopped_at" in clock or "paused_at" in clock:
        return clocks
    return clocks | {RESOLUTION: clock | {"paused_at": ts}}


def resume(clocks: dict[str, Any], calendar: Calendar, ts: float) -> dict[str, Any]:
    """End a pause: the deadline moves on by the (working) time the clock stood still."""
    clock = dict(clocks[RESOLUTION])
    paused_at = clock.pop("paused_at", None)
    if paused_at is None:
        return clocks
    due = float(clock["due"])
    if due > paused_at:
        shift = calendar.add(ts, calendar.between(float(paused_at), due)) - due
    else:
        shift = ts - float(paused_at)
    clock["due"] = due + shift
    if clock.get("next_at") is not None:
        clock["next_at"] = float(clock["next_at"]) + shift
    clock["paused_s"] = float(clock.get("paused_s", 0.0)) + (ts - float(paused_at))
    return clocks | {RESOLUTION: clock}


def overdue(ticket: Ticket, policy: LifecyclePolicy, now: float) -> bool:
    """Past its resolution deadline and still not repaired (for the overdue share)."""
    clock = clocks_of(ticket, policy)[RESOLUTION]
    if "stopped_at" in clock or ticket.state not in RESOLUTION_RUNS:
        return False
    stood = float(clock.get("paused_at") or now)
    return stood > float(clock["due"])


# --- steps ------------------------------------------------------------------------------------


def _clock(calendar: Calendar, start: float, target_s: float, warn_before: float) -> dict[str, Any]:
    due = calendar.add(start, target_s)
    warn_at = calendar.add(start, target_s * (1.0 - warn_before))
    return {"start": start, "target_s": target_s, "due": due, "next_at": warn_at, "step": 0}


def _running(ticket: Ticket, name: str, clock: Mapping[str, Any]) -> bool:
    if "stopped_at" in clock or clock.get("next_at") is None:
        return False
    if name == RESPONSE:
        return ticket.state in RESOLUTION_RUNS and "response" not in ticket.attributes
    return ticket.state in RESOLUTION_RUNS and "paused_at" not in clock


def _advance(clock: dict[str, Any], calendar: Calendar, sla: SlaTarget) -> None:
    step = int(clock["step"]) + 1
    clock["step"] = step
    due = float(clock["due"])
    levels = len(sla.levels)
    if step == 1:
        clock["next_at"] = due
    elif step <= levels + 1:
        # After level (step - 1): the next level (or `unattended`) one repeat interval later.
        clock["next_at"] = calendar.add(due, (step - 1) * sla.repeat_s)
    else:
        clock["next_at"] = None


def _kind(step: int, sla: SlaTarget) -> str:
    levels = len(sla.levels)
    if step == 0:
        return "sla_warning"
    if step == 1:
        return "sla_breached"
    if step <= levels:
        return "sla_escalated"
    return "unattended"


def _step(name: str, step: int, clock: Mapping[str, Any], sla: SlaTarget, now: float) -> Step:
    kind = _kind(step, sla)
    due = float(clock["due"])
    detail: dict[str, Any] = {"clock": name, "due_at": due, "target_s": clock["target_s"]}
    levels = len(sla.levels)
    if kind == "sla_warning":
        detail |= {"left_s": max(0.0, due - now), "target": sla.levels[0] if levels else None}
    elif kind in ("sla_breached", "sla_escalated"):
        level = step  # step 1 -> level 1 ... step L -> level L
        detail |= {
            "level": level,
            "levels": levels,
            "target": sla.levels[level - 1] if levels else None,
            "overdue_s": now - due,
            "next_at": clock.get("next_at"),
        }
    else:
        detail |= {
            "levels": levels,
            "overdue_s": now - due,
            "last_target": sla.levels[-1] if levels else None,
        }
    return Step(kind, detail)
