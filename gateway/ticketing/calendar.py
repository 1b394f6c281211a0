"""Working time of a site: the hours in which SLA clocks of the lower priorities run.

Maintenance organisations state P2/P3 targets in working days and hours ("respond within one
working day"): a ticket opened on Friday evening is not late on Saturday morning. A calendar is
working weekdays, one daily window of local time and holidays (local dates); a priority whose
SLA row says `working_time` counts only the seconds inside it. Without a calendar every second
counts (24/7), which is what urgent priorities always use.

Pure arithmetic on epoch seconds; the site's time zone comes from the system's zone database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A calendar with no working second would never let a deadline come; the search gives up here.
MAX_DAYS_SEARCHED = 3660


@dataclass(frozen=True, slots=True)
class WorkingCalendar:
    weekdays: frozenset[int] = frozenset(range(5))  # 0 = Monday
    start_s: int = 7 * 3600  # seconds after local midnight
    end_s: int = 17 * 3600
    timezone: str = "UTC"
    holidays: frozenset[dt.date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 0 <= self.start_s < self.end_s <= 86400:
            raise ValueError("a working day must start before it ends, within the day")
        if not self.weekdays:
            raise ValueError("a working calendar needs at least one working day")

    @property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _window(self, day: dt.date) -> tuple[float, float] | None:
        """The working window of a local date as epoch seconds, or None on a day off."""
        if day.weekday() not in self.weekdays or day in self.holidays:
            return None
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=self._zone)
        start = midnight + dt.timedelta(seconds=self.start_s)
        end = midnight + dt.timedelta(seconds=self.end_s)
        return start.timestamp(), end.timestamp()

    def _day_of(self, ts: float) -> dt.date:
        return dt.datetime.fromtimestamp(ts, self._zone).date()

    def add(self, start: float, seconds: float) -> float:
        """The instant when `seconds` of working time have passed after `start`."""
        left = max(0.0, seconds)
        day = self._day_of(start)
        for _ in range(MAX_DAYS_SEARCHED):
            window = self._window(day)
            if window is not None:
                begin, end = max(window[0], start), window[1]
                if begin < end:
                    if left <= end - begin:
                        return begin + left
                    left -= end - begin
            day += dt.timedelta(days=1)
        raise ValueError("the working calendar has no working time in ten years")

    def between(self, start: float, end: float) -> float:
        """Working seconds from `start` to `end` (negative when `end` is earlier)."""
        if end < start:
            return -self.between(end, start)
        total = 0.0
        day = self._day_of(start)
        last = self._day_of(end)
        while day <= last:
            window = self._window(day)
            if window is not None:
                total += max(0.0, min(window[1], end) - max(window[0], start))
            day += dt.timedelta(days=1)
        return total


@dataclass(frozen=True, slots=True)
class AllHours:
    """Every second counts: the clock of urgent priorities, and of all without a calendar."""

    def add(self, start: float, seconds: float) -> float:
        return start + max(0.0, seconds)

    def between(self, start: float, end: float) -> float:
        return end - start


Calendar = WorkingCalendar | AllHours
