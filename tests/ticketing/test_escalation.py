"""Issue 13, item 2: SLA clocks on working time, the escalation steps and the SLA table the
docs publish (docs/TICKETS.md), without a broker."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

from gateway.config.models import TicketingConfig
from gateway.core.records import Priority
from gateway.ticketing import escalation
from gateway.ticketing.calendar import WorkingCalendar
from tests.support.site import REPO
from tests.ticketing.policies import default_policy

HOUR = 3600.0
# Friday 2024-05-03 16:00 in Berlin (CEST, UTC+2) = 14:00 UTC.
FRIDAY_4PM = dt.datetime(2024, 5, 3, 14, 0, tzinfo=dt.UTC).timestamp()
BERLIN = WorkingCalendar(timezone="Europe/Berlin")  # Mon-Fri 07:00-17:00 local


def test_working_time_skips_the_night_and_the_weekend():
    # 4 working hours from Friday 16:00: 1 h on Friday, 3 h on Monday from 07:00 -> 10:00.
    due = BERLIN.add(FRIDAY_4PM, 4 * HOUR)
    assert dt.datetime.fromtimestamp(due, dt.UTC) == dt.datetime(2024, 5, 6, 8, 0, tzinfo=dt.UTC)
    assert BERLIN.between(FRIDAY_4PM, due) == 4 * HOUR


def test_a_holiday_is_not_working_time():
    calendar = replace(BERLIN, holidays=frozenset({dt.date(2024, 5, 6)}))
    due = calendar.add(FRIDAY_4PM, 4 * HOUR)  # Monday is off: Tuesday 10:00 local
    assert dt.datetime.fromtimestamp(due, dt.UTC) == dt.datetime(2024, 5, 7, 8, 0, tzinfo=dt.UTC)


def test_lower_priorities_count_working_hours_and_urgent_ones_every_hour():
    policy = default_policy(calendar=BERLIN)
    p1 = escalation.new_clocks(policy, Priority.P1, FRIDAY_4PM)
    p3 = escalation.new_clocks(policy, Priority.P3, FRIDAY_4PM)
    assert p1["response"]["due"] == FRIDAY_4PM + 15 * 60  # urgent: 24/7
    # P3 respond 4 h of working time: Monday 10:00 local, not Friday 20:00.
    assert p3["response"]["due"] == BERLIN.add(FRIDAY_4PM, 4 * HOUR)
    assert p3["response"]["due"] - FRIDAY_4PM == 66 * HOUR


def test_a_hold_for_access_stops_the_resolution_clock_one_for_parts_does_not():
    policy = default_policy()
    assert policy.hold_pauses == {"parts": False, "access": True, "production": True}
    clocks = escalation.new_clocks(policy, Priority.P1, 0.0)
    paused = escalation.pause(clocks, 600.0)
    resumed = escalation.resume(paused, policy.clock_of(Priority.P1), 600.0 + 3 * HOUR)
    assert resumed["resolution"]["due"] == clocks["resolution"]["due"] + 3 * HOUR
    assert resumed["response"] == clocks["response"]


def test_the_sla_table_in_the_docs_is_the_configured_default():
    table = (REPO / "docs" / "TICKETS.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (P[0-3]) \| (.+) \|$", table, flags=re.MULTILINE))
    defaults = TicketingConfig().sla
    for priority, row in defaults.items():
        cells = [c.strip() for c in rows[priority.value].split("|")]
        assert cells[3].split(", ") == row.levels, priority
        assert cells[5] == ("yes" if row.working_time else "no"), priority
        assert _minutes(cells[0]) == row.respond_min and _minutes(cells[1]) == row.resolve_min
        assert _minutes(cells[4]) == row.repeat_min
        assert cells[2] == f"at {100 - row.warn_before_pct:.0f} %"


def _minutes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"min": 1, "h": 60}[unit]
