"""Alarm floods turned into incidents (ANSI/ISA-18.2 section 16.5, DESIGN.md section 6, issue 5).

More than `flood_threshold` new conditions in `flood_window_s` in one area open one incident
(fault code `alarm.flood`, asset = the area). While the flood lasts:

- a new condition of the area is folded into the incident instead of opening a ticket;
  a rule in `safety_detectors` still opens its own, linked with `incident_id`;
- re-raises and clears of the area's open tickets are folded quietly, and each of those tickets
  gets one catch-up `updated` (reason `flood_ended`) when the flood ends;
- the incident is updated at most every `incident_update_interval_s`, at once when it escalates
  to P0 (more than `flood_p0_per_hour` in an hour) and when the flood ends.

`FloodTracker` (storms) does the counting; this module decides what is published.
"""

from __future__ import annotations

import logging

from gateway.core.records import FaultCode, Finding, Priority, Ticket, dedup_key
from gateway.ticketing import tickets
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.opening import TicketOpener
from gateway.ticketing.storms import AreaFlood, Arrival, FloodTracker

log = logging.getLogger(__name__)

FLOOD_DETECTOR = "isa18.2-flood"


class Incidents:
    def __init__(self, ledger: Ledger, opener: TicketOpener) -> None:
        self._ledger = ledger
        self._opener = opener
        policy = ledger.policy
        self.storms = FloodTracker(
            policy.flood_threshold,
            policy.flood_window_s,
            policy.flood_end_below,
            policy.flood_p0_per_hour,
        )

    def arrive(self, key: str, finding: Finding) -> AreaFlood | None:
        """Count a new condition for the flood detector of its area; returns the area's flood."""
        if finding.fault_code == FaultCode.ALARM_FLOOD:
            return None
        area = self._ledger.profile(finding.asset).flood_area
        flood, started = self.storms.arrive(
            area, Arrival(finding.ts, key, finding.asset, finding.fault_code)
        )
        if started:
            log.warning(
                "Alarm flood in area `%s`: more than %d new conditions in %.0f s.",
                area,
                self.storms.threshold,
                self.storms.window_s,
            )
        return flood

    def folded_into(self, key: str, asset: str) -> AreaFlood | None:
        """The flood whose open incident this condition was folded into, if any."""
        flood = self.storms.flood(self._ledger.profile(asset).flood_area)
        if flood is None or key not in flood.folded:
            return None
        return flood if flood.incident_key in self._ledger.open else None

    def quieting(self, ticket: Ticket) -> AreaFlood | None:
        """The flood that quiets this ticket's updates, if its area is in one (not incidents,
        not safety rules)."""
        if ticket.fault_code == FaultCode.ALARM_FLOOD:
            return None
        if ticket.detector in self._ledger.policy.safety_detectors:
            return None
        return self.storms.flood(self._ledger.profile(ticket.asset).flood_area)

    async def new_condition_in_flood(self, key: str, finding: Finding, flood: AreaFlood) -> None:
        """A new condition arrived while its area floods: fold it into the incident, or, for a
        safety rule, open its own ticket linked to the incident."""
        incident = await self.incident_for(flood, finding.ts)
        if finding.detector in self._ledger.policy.safety_detectors:
            await self._opener.open_or_recur(key, finding, incident_id=incident.id)
            return
        flood.folded.add(key)
        self._ledger.counters.flood_members += 1
        log.debug("Condition `%s` folded into incident `%s`.", key, incident.id)

    async def incident_for(self, flood: AreaFlood, ts: float) -> Ticket:
        """The flood's incident ticket: opened on the first call, updated (throttled) after."""
        ledger = self._ledger
        if flood.incident_key is not None:
            incident = ledger.open.get(flood.incident_key)
            if incident is not None:
                await self._update(flood, incident, ts, force=False)
                return ledger.open[flood.incident_key]
        key = dedup_key(ledger.site, flood.area, FaultCode.ALARM_FLOOD, FLOOD_DETECTOR)
        earlier = ledger.open.get(key)
        if earlier is not None:
            # The incident of an earlier flood in this area is still open (the central system
            # has not closed it): the new flood continues it, as one key has one open ticket.
            flood.incident_key = key
            await self._update(flood, earlier, ts, force=True, reason="flood_again")
            log.warning("Alarm flood in area `%s` continues incident `%s`.", flood.area, earlier.id)
            return ledger.open[key]
        priority = self._priority(flood, ts)
        root = flood.suspected_root_cause()
        summary = flood.summary()
        finding = Finding(
            asset=flood.area,
            fault_code=FaultCode.ALARM_FLOOD,
            severity=priority,
            score=float(len(flood.members)),
            detector=FLOOD_DETECTOR,
            message=(
                f"Alarm flood in area {flood.area}: {len(flood.members)} conditions in "
                f"{self.storms.window_s / 60:.0f} min; suspected root cause {root.fault_code} "
                f"on {root.asset}."
            ),
            ts=ts,
            evidence={"incident": summary},
        )
        linked = [t.id for t in ledger.open.values() if t.key in flood.members]
        incident = await self._opener.open_or_recur(
            key, finding, incident=summary, linked_tickets=linked
        )
        flood.incident_key = key
        flood.published_members = len(flood.members)
        flood.published_at = ts
        ledger.counters.incidents += 1
        return incident

    async def advance(self, now: float) -> None:
        """Publish due incident updates and end the floods that are over."""
        ledger = self._ledger
        for flood in self.storms.floods():
            incident = ledger.open.get(flood.incident_key or "")
            if incident is not None:
                await self._update(flood, incident, now, force=False)
        for flood in self.storms.end_floods(now):
            log.warning(
                "Alarm flood in area `%s` ended after %.0f s with %d members.",
                flood.area,
                now - flood.started_at,
                len(flood.members),
            )
            incident = ledger.open.get(flood.incident_key or "")
            if incident is not None:
                await self._update(flood, incident, now, force=True, ended=True)
            for key in sorted(flood.quieted):
                await self._catch_up(key, now)

    def _priority(self, flood: AreaFlood, now: float) -> Priority:
        if self.storms.per_hour(flood.area, now) > self.storms.p0_per_hour:
            return Priority.P0
        return Priority.P1

    async def _update(
        self,
        flood: AreaFlood,
        incident: Ticket,
        ts: float,
        *,
        force: bool,
        ended: bool = False,
        reason: str | None = None,
    ) -> None:
        priority = Priority.most_urgent(incident.priority, self._priority(flood, ts))
        escalated = priority is not incident.priority
        due = ts - flood.published_at >= self._ledger.policy.incident_update_interval_s
        changed = len(flood.members) != flood.published_members
        if not (force or escalated or (due and changed)):
            return
        summary = flood.summary() | ({"ended_at": ts} if ended else {})
        updated, event = tickets.annotate(
            incident,
            "updated",
            ts,
            {
                "reason": reason
                or ("flood_ended" if ended else ("escalated" if escalated else "members")),
                "member_count": len(flood.members),
                "priority": priority.value,
                "previous_priority": incident.priority.value if escalated else None,
            },
            priority=priority,
            last_seen=max(incident.last_seen, ts),
            occurrences=max(incident.occurrences, flood.arrivals),
            evidence=dict(incident.evidence) | {"incident": summary},
            attributes=tickets.with_attributes(incident, incident=summary),
        )
        await self._ledger.commit(updated, [event])
        flood.published_members = len(flood.members)
        flood.published_at = ts
        if escalated:
            self._ledger.counters.escalated += 1
            log.warning("Incident `%s` escalated to %s.", incident.id, priority)

    async def _catch_up(self, key: str, now: float) -> None:
        """One `updated` for an open ticket whose changes the flood folded quietly."""
        ticket = self._ledger.open.get(key)
        if ticket is None:
            return
        active = self._ledger.condition_active(key)
        updated, event = tickets.annotate(
            ticket,
            "updated",
            now,
            {
                "reason": "flood_ended",
                "occurrences": ticket.occurrences,
                "condition_active": active,
                "peak_value": ticket.peak_value,
            },
            condition_active=active,
        )
        await self._ledger.commit(updated, [event])
