"""The condition machine: the edge-owned alarm state of one dedup key (DESIGN.md section 6).

    state     input    next state                                              trigger
    NORMAL    raised   PENDING, or straight on to ACTIVE when on-delay is 0    RAISED
    PENDING   raised   ACTIVE once raised for on-delay                         RAISED
    PENDING   dropped  NORMAL (cancelled; never reported)                      -
    ACTIVE    raised   ACTIVE (same episode: a repeat or an escalation)        REPEATED
    ACTIVE    dropped  CLEARING, or straight on to NORMAL when off-delay is 0  CLEARED
    CLEARING  raised   ACTIVE (off-delay cancelled; the episode goes on)       REPEATED
    CLEARING  dropped  NORMAL once dropped for off-delay                       CLEARED
    PENDING / CLEARING with time passing (`advance`): the same delay rules.
    A trigger is reported only on reaching the state that earns it (ACTIVE, NORMAL).

Pure: a `Condition` in, a `ConditionStep` out, time passed in by the caller. The input is a
level: an active finding raises it, an inactive finding drops it, and it stays there until the
next finding. Delays default to 0 because threshold detectors apply their own on/off delays;
other detectors (and ISA-18.2 tuning) can use the ones here.

The noise-control flags (SHELVED, SUPPRESSED, CHATTERING, STALE) gate what a step reports; they do
not change these four states.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.core.records import Condition, ConditionState


@dataclass(frozen=True, slots=True)
class ConditionPolicy:
    """Delays owned by the condition machine, in seconds of finding time."""

    on_delay_s: float = 0.0
    off_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.on_delay_s < 0 or self.off_delay_s < 0:
            raise ValueError("condition delays must not be negative")


class Trigger(enum.StrEnum):
    """What a step means for the ticket of the key."""

    RAISED = "raised"  # became ACTIVE: a new episode, opens or enriches the ticket
    REPEATED = "repeated"  # raised again while ACTIVE or CLEARING: the same episode goes on
    CLEARED = "cleared"  # back to NORMAL from an active episode: report condition_cleared


@dataclass(frozen=True, slots=True)
class ConditionStep:
    """The condition after one input, and the trigger for ticketing (None: nothing to report)."""

    before: Condition
    after: Condition
    trigger: Trigger | None = None

    @property
    def changed(self) -> bool:
        return self.before.state is not self.after.state


def normal(key: str, since: float = 0.0) -> Condition:
    return Condition(key=key, state=ConditionState.NORMAL, since=since)


def observe(
    condition: Condition, raised: bool, ts: float, policy: ConditionPolicy
) -> ConditionStep:
    """Feed one finding: `raised` is `finding.active`, `ts` its time."""
    state = condition.state
    if raised:
        if state is ConditionState.NORMAL:
            pending = _to(condition, ConditionState.PENDING, ts)
            # An on-delay of 0 promotes at once; the same rule as the timer, not a special case.
            return _promote_if_due(condition, pending, ts, policy)
        if state is ConditionState.PENDING:
            return _promote_if_due(condition, condition, ts, policy)
        if state is ConditionState.ACTIVE:
            return ConditionStep(condition, condition, Trigger.REPEATED)
        # CLEARING: the value came back before the off-delay ran out; the episode goes on.
        return ConditionStep(condition, _to(condition, ConditionState.ACTIVE, ts), Trigger.REPEATED)

    if state is ConditionState.PENDING:
        # Dropped before the on-delay elapsed: never reported, so nothing to clear.
        return ConditionStep(condition, _to(condition, ConditionState.NORMAL, ts))
    if state is ConditionState.ACTIVE:
        clearing = _to(condition, ConditionState.CLEARING, ts)
        return _finish_if_due(condition, clearing, ts, policy)
    if state is ConditionState.CLEARING:
        return _finish_if_due(condition, condition, ts, policy)
    return ConditionStep(condition, condition)


def advance(condition: Condition, now: float, policy: ConditionPolicy) -> ConditionStep:
    """Let time pass with no new finding: completes an on-delay or an off-delay that ran out."""
    if condition.state is ConditionState.PENDING:
        return _promote_if_due(condition, condition, now, policy)
    if condition.state is ConditionState.CLEARING:
        return _finish_if_due(condition, condition, now, policy)
    return ConditionStep(condition, condition)


def _promote_if_due(
    before: Condition, pending: Condition, now: float, policy: ConditionPolicy
) -> ConditionStep:
    if now - pending.since >= policy.on_delay_s:
        return ConditionStep(before, _to(pending, ConditionState.ACTIVE, now), Trigger.RAISED)
    return ConditionStep(before, pending)


def _finish_if_due(
    before: Condition, clearing: Condition, now: float, policy: ConditionPolicy
) -> ConditionStep:
    if now - clearing.since >= policy.off_delay_s:
        return ConditionStep(before, _to(clearing, ConditionState.NORMAL, now), Trigger.CLEARED)
    return ConditionStep(before, clearing)


def _to(condition: Condition, state: ConditionState, ts: float) -> Condition:
    return Condition(key=condition.key, state=state, since=ts)
