"""SLA clocks and the escalation policy with an end, pure.

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
The levels come one repeat interval after another from the deadline, or from `levels_from`
(the step `levels_step` was reached there) once a priority raise re-planned them (`retarget`).
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
# Holds kept per clock for `retarget` (older ones count by their length only).
MAX_HOLDS_KEPT = 20

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
    """The ticket's clocks; a ticket stored without them gets them from its deadlines."""
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


def retarget(
    clocks: Mapping[str, Any], policy: LifecyclePolicy, priority: Priority, now: float
) -> dict[str, Any]:
    """The ticket's priority was raised at `now`: its clocks run for the new priority's SLA row.

    A running clock gets the new target counted from its original start (the open or reopen,
    not the raise), moved on by the holds that stopped it, as if the ticket had had the new
    priority all along. A stopped clock (a person responded, the repair was reported) stays as
    it was: it was judged against the deadline in force then. Steps already reported are not
    repeated: a warned clock is not warned again; a deadline already past gives one breach
    at the raise, without a warning first; a clock already breached keeps the level it reached.
    Either way the new priority's levels follow one of its repeat intervals after another,
    counted from the raise."""
    sla = policy.sla_for(priority)
    calendar = policy.clock_of(priority)
    previous = str(clocks.get("priority", priority.value))
    retargeted = {k: dict(v) if isinstance(v, Mapping) else v for k, v in clocks.items()}
    retargeted |= {
        "priority": priority.value,
        "working_time": sla.working_time and policy.calendar is not None,
        "raised": {"from": previous, "at": now},
    }
    for name, target_s in ((RESPONSE, sla.respond_s), (RESOLUTION, sla.resolve_s)):
        clock = retargeted[name]
        if "stopped_at" in clock:
            continue
        retargeted[name] = _retargeted(clock, calendar, sla, target_s, now)
    return retargeted


def _retargeted(
    clock: dict[str, Any], calendar: Calendar, sla: SlaTarget, target_s: float, now: float
) -> dict[str, Any]:
    fresh = _clock(calendar, float(clock["start"]), target_s, sla.warn_before)
    due, warn_at = float(fresh["due"]), float(fresh["next_at"])
    # The holds that stopped the clock move the new deadline on as they moved the old one.
    replayed_s = 0.0
    for since, until in clock.get("held") or ():
        shift = _hold_shift(calendar, due, float(since), float(until))
        due, warn_at = due + shift, warn_at + shift
        replayed_s += float(until) - float(since)
    # Holds older than the ones kept (or from before they were kept): their time, as is.
    unlisted_s = max(0.0, float(clock.get("paused_s", 0.0)) - replayed_s)
    due, warn_at = due + unlisted_s, warn_at + unlisted_s
    # On hold now: the clock stands at the pause; `resume` moves everything on from there.
    ref = float(clock.get("paused_at") or now)
    fired = int(clock.get("step", 0))
    done = clock.get("next_at") is None  # every step reported already (unattended)
    out = clock | {"target_s": target_s, "due": due}
    for anchor in ("levels_from", "levels_step"):
        out.pop(anchor, None)
    if done:
        return out
    if fired >= 2:  # breached already: the level reached stays, the next one a repeat later
        step = min(fired, len(sla.levels) + 1)
        return out | {
            "step": step,
            "next_at": calendar.add(ref, sla.repeat_s),
            "levels_from": ref,
            "levels_step": step - 1,
        }
    if ref >= due:  # the new deadline is past already: one breach now, no warning first
        return out | {"step": 1, "next_at": ref, "levels_from": ref, "levels_step": 1}
    if fired == 1:  # warned already: the breach at the new deadline comes next
        return out | {"step": 1, "next_at": due}
    return out | {"step": 0, "next_at": warn_at}  # the new warning (now, if it is past)


def _hold_shift(calendar: Calendar, due: float, since: float, until: float) -> float:
    """How far a hold from `since` to `until` moves a deadline `due` (the rule of `resume`)."""
    if due > since:
        return calendar.add(until, calendar.between(since, due)) - due
    return until - since


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
    shift = _hold_shift(calendar, due, float(paused_at), ts)
    clock["due"] = due + shift
    for moved in ("next_at", "levels_from"):
        if clock.get(moved) is not None:
            clock[moved] = float(clock[moved]) + shift
    clock["paused_s"] = float(clock.get("paused_s", 0.0)) + (ts - float(paused_at))
    # Kept so that a priority raise later can move its own deadline by the same holds.
    clock["held"] = [*list(clock.get("held") or []), [float(paused_at), ts]][-MAX_HOLDS_KEPT:]
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
        # After level (step - 1): the next level (or `unattended`) one repeat interval later,
        # counted from the deadline (level 1), or from where a priority raise re-planned them.
        anchor = float(clock.get("levels_from", due))
        first = int(clock.get("levels_step", 1))
        clock["next_at"] = calendar.add(anchor, (step - first) * sla.repeat_s)
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
