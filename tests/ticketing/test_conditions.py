"""The condition machine as tables: (time, input) in, (state, trigger) out."""

from __future__ import annotations

import pytest

from gateway.core.records import ConditionState
from gateway.ticketing.conditions import ConditionPolicy, Trigger, advance, normal, observe

N, P, A, C = (
    ConditionState.NORMAL,
    ConditionState.PENDING,
    ConditionState.ACTIVE,
    ConditionState.CLEARING,
)
RAISED, REPEATED, CLEARED = Trigger.RAISED, Trigger.REPEATED, Trigger.CLEARED
UP, DOWN, TICK = "up", "down", "tick"


def run(policy: ConditionPolicy, table):
    condition = normal("s/a/f/d")
    out = []
    for ts, what in table:
        if what == TICK:
            step = advance(condition, ts, policy)
        else:
            step = observe(condition, what == UP, ts, policy)
        condition = step.after
        out.append((condition.state, step.trigger))
    return out


CASES = {
    "no delays: raise, repeat, clear": (
        ConditionPolicy(),
        [(0, UP), (1, UP), (2, DOWN), (3, DOWN)],
        [(A, RAISED), (A, REPEATED), (N, CLEARED), (N, None)],
    ),
    "a clear with nothing raised is nothing": (
        ConditionPolicy(),
        [(0, DOWN), (1, TICK)],
        [(N, None), (N, None)],
    ),
    "on-delay: pending until held, then raised by a later finding": (
        ConditionPolicy(on_delay_s=5),
        [(0, UP), (3, UP), (5, UP), (6, UP)],
        [(P, None), (P, None), (A, RAISED), (A, REPEATED)],
    ),
    "on-delay: raised by the timer with no new finding": (
        ConditionPolicy(on_delay_s=5),
        [(0, UP), (4.9, TICK), (5, TICK)],
        [(P, None), (P, None), (A, RAISED)],
    ),
    "on-delay cancelled by a drop: back to normal, nothing reported": (
        ConditionPolicy(on_delay_s=5),
        [(0, UP), (3, DOWN), (4, UP), (8, TICK), (9, TICK)],
        [(P, None), (N, None), (P, None), (P, None), (A, RAISED)],
    ),
    "off-delay: clearing until held, then cleared": (
        ConditionPolicy(off_delay_s=5),
        [(0, UP), (10, DOWN), (14, TICK), (15, TICK)],
        [(A, RAISED), (C, None), (C, None), (N, CLEARED)],
    ),
    "off-delay cancelled by a re-raise: the episode goes on": (
        ConditionPolicy(off_delay_s=5),
        [(0, UP), (10, DOWN), (12, UP), (13, DOWN), (17, DOWN), (18, DOWN)],
        [(A, RAISED), (C, None), (A, REPEATED), (C, None), (C, None), (N, CLEARED)],
    ),
    "both delays": (
        ConditionPolicy(on_delay_s=2, off_delay_s=3),
        [(0, UP), (2, TICK), (5, DOWN), (8, TICK), (9, UP)],
        [(P, None), (A, RAISED), (C, None), (N, CLEARED), (P, None)],
    ),
}


@pytest.mark.parametrize(("policy", "table", "expected"), CASES.values(), ids=CASES.keys())
def test_condition_table(policy, table, expected):
    assert run(policy, table) == expected


def test_since_records_when_the_state_was_entered():
    policy = ConditionPolicy(on_delay_s=5)
    step = observe(normal("k"), True, 10.0, policy)
    assert step.after.since == 10.0 and step.changed
    step = observe(step.after, True, 12.0, policy)
    assert step.after.since == 10.0 and not step.changed  # still counting from the first
    step = advance(step.after, 15.0, policy)
    assert (step.after.state, step.after.since, step.after.key) == (A, 15.0, "k")


def test_negative_delays_are_refused():
    with pytest.raises(ValueError, match="negative"):
        ConditionPolicy(on_delay_s=-1)
