"""The conditions an area flood's incident folded, kept until the central system closes the
incident, pure bookkeeping.

A flood (`storms.AreaFlood`) lasts minutes; its incident stays open until the central system
closes it, days later perhaps, and a second flood of the area may continue it meanwhile. What
the incident folded instead of ticketing must outlive the flood that folded it: when the
incident closes, each condition folded into it and still active gets its own ticket
(`after_incident`), never nothing. So the folded conditions are kept here per incident key,
with the finding that raised each and whether it is still active, and saved one row each
(`storm_members`, scope `incident:<incident key>`) so that a restart keeps them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from gateway.core.records import Finding

SCOPE_PREFIX = "incident:"


@dataclass(slots=True)
class FloodFolds:
    # Incident key -> condition key -> the finding that raised it (`active`: not cleared since).
    _by_incident: dict[str, dict[str, Finding]] = field(default_factory=dict)
    _incident_of: dict[str, str] = field(default_factory=dict)  # condition key -> incident key
    # For the journal: rows to write and rows to delete, as (incident key, condition key).
    changed: set[tuple[str, str]] = field(default_factory=set)
    gone: set[tuple[str, str]] = field(default_factory=set)

    def fold(self, incident_key: str, key: str, finding: Finding) -> None:
        """The incident took this new condition instead of a ticket of its own."""
        earlier = self._incident_of.get(key)
        if earlier is not None and earlier != incident_key:
            self._forget(earlier, key)
        self._by_incident.setdefault(incident_key, {})[key] = replace(finding, active=True)
        self._incident_of[key] = incident_key
        self.changed.add((incident_key, key))
        self.gone.discard((incident_key, key))

    def raised(self, key: str, finding: Finding) -> None:
        """Raised again while folded (the flood still counts it): active again."""
        incident_key = self._incident_of.get(key)
        if incident_key is not None:
            self.fold(incident_key, key, finding)

    def cleared(self, key: str) -> None:
        """The condition cleared: no fault to ticket when the incident closes, unless it comes
        back while folded."""
        incident_key = self._incident_of.get(key)
        if incident_key is None:
            return
        folded = self._by_incident[incident_key]
        folded[key] = replace(folded[key], active=False)
        self.changed.add((incident_key, key))

    def take(self, incident_key: str) -> dict[str, Finding]:
        """The incident closed: its folded conditions (active or not), forgotten here."""
        folded = self._by_incident.pop(incident_key, {})
        for key in folded:
            self._incident_of.pop(key, None)
            self.changed.discard((incident_key, key))
            self.gone.add((incident_key, key))
        return dict(sorted(folded.items()))

    def finding(self, incident_key: str, key: str) -> Finding | None:
        return self._by_incident.get(incident_key, {}).get(key)

    def active(self) -> list[Finding]:
        """Every folded condition still active (resumed ACTIVE after a restart)."""
        return [f for folded in self._by_incident.values() for f in folded.values() if f.active]

    def restore(self, rows: Iterable[tuple[str, str, Finding]]) -> None:
        """Take back what state.db kept: (incident key, condition key, finding)."""
        for incident_key, key, finding in rows:
            self._by_incident.setdefault(incident_key, {})[key] = finding
            self._incident_of[key] = incident_key

    def saved(self) -> None:
        self.changed.clear()
        self.gone.clear()

    def _forget(self, incident_key: str, key: str) -> None:
        folded = self._by_incident.get(incident_key, {})
        folded.pop(key, None)
        if not folded:
            self._by_incident.pop(incident_key, None)
        self.changed.discard((incident_key, key))
        self.gone.add((incident_key, key))
