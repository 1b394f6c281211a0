"""Ticket ids: `T-<site>-<gateway>-<yyyymmdd>-<nnnn>`, e.g. `T-plant1-edge1-20240501-0003`.

Readable on a phone and in a CMMS list, sortable by date, unique per gateway: the date is the
UTC day the ticket opened and `nnnn` counts tickets opened by this gateway that day (more than
9999 simply adds digits). The counter lives in memory; after a restart the ticket service skips
candidates that already exist in state.db, so ids are never reused. Site and gateway ids are
restricted by the config to letters, digits, `_` and `-`, so the id is safe in topics and
file names.
"""

from __future__ import annotations

from datetime import UTC, datetime


class TicketIds:
    def __init__(self, site: str, gateway_id: str) -> None:
        self._prefix = f"T-{site}-{gateway_id}"
        self._day = ""
        self._count = 0

    def next_candidate(self, ts: float) -> str:
        """The next id for a ticket opened at `ts` (epoch seconds); the caller checks it is free."""
        day = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y%m%d")
        if day != self._day:
            self._day, self._count = day, 0
        self._count += 1
        return f"{self._prefix}-{day}-{self._count:04d}"
