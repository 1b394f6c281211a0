"""Storms turned into incidents (DESIGN.md section 6): by signature and rate (the
`groups` rule: more than `group_threshold` new conditions of one group key in `group_window_s`,
at any pace; the second half of this module) and the ISA-18.2 area flood (section 16.5,
below). A new condition is offered to its group first; what no storm takes may still
be folded by its area's flood.

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
from collections.abc import Mapping
from dataclasses import replace

from gateway.core.records import FaultCode, Finding, Priority, Ticket, dedup_key
from gateway.ticketing import tickets
from gateway.ticketing.flood_folds import FloodFolds
from gateway.ticketing.groups import (
    GROUP_DETECTOR,
    GroupStorm,
    GroupTracker,
    RootCause,
    group_asset,
    group_key,
    group_labels,
)
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.opening import TicketOpener
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.storms import HOUR, AreaFlood, Arrival, FloodTracker
from gateway.ticketing.topology import Dependencies

log = logging.getLogger(__name__)

FLOOD_DETECTOR = "isa18.2-flood"


class Incidents:
    def __init__(self, ledger: Ledger, opener: TicketOpener, dependencies: Dependencies) -> None:
        self._ledger = ledger
        self._opener = opener
        self._deps = dependencies
        policy = ledger.policy
        self.storms = FloodTracker(
            policy.flood_threshold,
            policy.flood_window_s,
            policy.flood_end_below,
            policy.flood_p0_per_hour,
        )
        self.groups = GroupTracker(
            policy.group_threshold,
            policy.group_window_s,
            policy.group_wait_s,
            policy.flood_p0_per_hour,
        )
        # What each open flood incident folded: it outlives the flood, until the close.
        self.folds = FloodFolds()
        # Upstream asset -> the group keys with an open incident whose members it feeds or
        # drives: a condition of it arriving late is named their root cause.
        self._upstream_of: dict[str, set[str]] = {}
        ledger.closed_listeners.append(self._incident_closed)

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

    def quieting(self, ticket: Ticket) -> AreaFlood | GroupStorm | None:
        """The storm incident or the flood that quiets this ticket's updates: its group's open
        incident (a ticket from before it), or its area's flood (not incidents, not safety
        rules)."""
        if ticket.fault_code == FaultCode.ALARM_FLOOD:
            return None
        if ticket.detector in self._ledger.policy.safety_detectors:
            return None
        storm = self.group_quieting(ticket)
        if storm is not None:
            return storm
        return self.storms.flood(self._ledger.profile(ticket.asset).flood_area)

    async def new_condition_in_flood(self, key: str, finding: Finding, flood: AreaFlood) -> None:
        """A new condition arrived while its area floods: fold it into the incident, or, for a
        safety rule, open its own ticket linked to the incident."""
        incident = await self.incident_for(flood, finding.ts)
        if finding.detector in self._ledger.policy.safety_detectors:
            await self._opener.open_or_recur(key, finding, incident_id=incident.id)
            return
        flood.fold(key)
        assert flood.incident_key is not None
        self.folds.fold(flood.incident_key, key, finding)
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
        await self.advance_groups(now)

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

    # --- storms by signature (see `groups`) ----------------------------------------------------

    def quiet(self, key: str, quiet: AreaFlood | GroupStorm) -> None:
        """A change of an open ticket withheld by a flood or a storm's incident."""
        if isinstance(quiet, AreaFlood):
            quiet.quiet(key)
        elif key not in quiet.quieted:
            quiet.quieted.add(key)
            self.groups.mark_member(quiet, key, urgent=True)

    def count_quieted(self, key: str, finding: Finding, quiet: AreaFlood | GroupStorm) -> None:
        """A re-raise of an open ticket folded quietly: counted by the flood or the storm."""
        if isinstance(quiet, AreaFlood):
            self.arrive(key, finding)
        else:
            area = self._ledger.profile(finding.asset).area
            self.groups.add_member(quiet, key, finding.asset, finding.fault_code, area, finding.ts)
        self.quiet(key, quiet)

    def reindex(self) -> None:
        """After the journal restored the storms: which upstream assets feed their members."""
        for storm in self.groups.with_incident():
            storm.upstream_hits.clear()
            for member in storm.members.values():
                for up in self._deps.upstream(member.asset):
                    storm.upstream_hits[up] += 1
                    self._upstream_of.setdefault(up, set()).add(storm.key)

    def group_of(self, finding: Finding) -> GroupStorm:
        ledger = self._ledger
        labels = group_labels(
            ledger.policy.group_by, ledger.site, ledger.profile(finding.asset), finding.fault_code
        )
        return self.groups.group(group_key(labels), labels)

    def note_cleared(self, key: str) -> None:
        """A condition with no ticket cleared: if a storm holds or folded it, it is no longer a
        fault to ticket when the hold or the incident ends."""
        self.folds.cleared(key)
        raised = self._ledger.last_active.get(key)
        if raised is not None:
            self.groups.cleared(self.group_of(raised), key)

    def resumable(self) -> list[Finding]:
        """Held and folded conditions still active after a restart: resumed ACTIVE like an
        open ticket's, so that their clear on fresh data is seen."""
        held = [
            f
            for storm in self.groups.groups()
            for f in (*storm.held.values(), *storm.faults.values())
            if f.active
        ]
        return held + self.folds.active()

    def folded_in_group(self, key: str, finding: Finding) -> bool:
        """A condition folded into its group's open incident raised again: counted there."""
        storm = self.group_of(finding)
        if key not in storm.folded or storm.incident_key not in self._ledger.open:
            return False
        area = self._ledger.profile(finding.asset).area
        self.groups.add_member(storm, key, finding.asset, finding.fault_code, area, finding.ts)
        self.groups.raised(storm, key, finding)
        return True

    async def grouped(self, key: str, finding: Finding) -> bool:
        """A new condition (its key has no open ticket), counted for its group. True when the
        group took it: folded into the group's incident, held by group_wait, or opened as the
        root cause or a safety ticket of an incident. False: open it as usual (`ungrouped`)."""
        if finding.fault_code == FaultCode.ALARM_FLOOD:
            return False
        ledger = self._ledger
        storm = self.group_of(finding)
        if key in storm.held:
            storm.held[key] = finding  # raised again while held: still one condition
            return True
        self.groups.arrive(storm, Arrival(finding.ts, key, finding.asset, finding.fault_code))
        urgent = (
            finding.severity is Priority.P0 or finding.detector in ledger.policy.safety_detectors
        )
        fed = sorted(g for g in self._upstream_of.get(finding.asset, ()) if self._open_incident(g))
        if fed:
            # It feeds or drives the members of open incidents: their root cause, which gets
            # a ticket of its own however late it arrives (never folded as a symptom).
            first = self._open_incident(fed[0])
            assert first is not None
            await self._opener.open_or_recur(key, finding, incident_id=first.id)
            for name in fed:
                fed_storm = self.groups.get(name)
                if fed_storm is not None:
                    self._name_root(fed_storm, key, finding.asset, finding.fault_code, finding.ts)
                    await self._publish_group(fed_storm, finding.ts, force=False)
            return True
        incident = self._open_incident(storm.key)
        if incident is not None:
            self._add_member(storm, key, finding)
            if urgent:
                await self._opener.open_or_recur(key, finding, incident_id=incident.id)
            else:
                self.groups.fold(storm, key, finding)
                ledger.counters.flood_members += 1
            await self._publish_group(storm, finding.ts, force=False)
            return True
        if self.groups.over_threshold(storm):
            await self._open_group_incident(storm, finding.ts, key, finding, urgent=urgent)
            return True
        if urgent:
            return False
        held = storm.hold_until is not None and finding.ts < storm.hold_until
        if held or self.groups.starts_hold(storm, finding.ts):
            self.groups.hold(storm, key, finding)
            return True
        return False

    async def ungrouped(self, key: str, finding: Finding) -> None:
        """A new condition no storm took: the area's flood folds it, or it opens a ticket."""
        flood = self.arrive(key, finding)
        if flood is None:
            await self._opener.open_or_recur(key, finding)
            return
        await self.new_condition_in_flood(key, finding, flood)

    def _open_incident(self, name: str) -> Ticket | None:
        storm = self.groups.get(name)
        if storm is None or storm.incident_key is None:
            return None
        return self._ledger.open.get(storm.incident_key)

    def _add_member(self, storm: GroupStorm, key: str, finding: Finding) -> None:
        area = self._ledger.profile(finding.asset).area
        new = key not in storm.members
        self.groups.add_member(storm, key, finding.asset, finding.fault_code, area, finding.ts)
        if new:
            self._index_upstream(storm, finding.asset)

    def _index_upstream(self, storm: GroupStorm, asset: str) -> None:
        """Count the member for every asset upstream of it: the depth of the topology, not the
        size of the storm. A member that is itself upstream of the others may be the root."""
        for up in self._deps.upstream(asset):
            storm.upstream_hits[up] += 1
            self._upstream_of.setdefault(up, set()).add(storm.key)
            if storm.root is not None and storm.root.asset == up:
                storm.root.upstream_of = storm.upstream_hits[up]

    def _name_root(
        self, storm: GroupStorm, key: str, asset: str, fault_code: str, ts: float
    ) -> None:
        """Take this condition as the root cause when the topology says so and it is upstream
        of more members than the one named so far."""
        hits = storm.upstream_hits.get(asset, 0)
        if hits == 0:
            return
        root = storm.root
        if root is not None and root.named_by != "arrival_order" and root.upstream_of >= hits:
            return
        named_by = "link" if self._deps.is_link(asset) else "depends_on"
        storm.root = RootCause(key, asset, fault_code, ts, named_by, hits)
        self.groups.mark(storm, urgent=True)

    def _root_by_topology(self, storm: GroupStorm) -> None:
        """At the incident's opening: an active condition upstream of the members (an open
        ticket, or a member itself) is the root cause; else the earliest member, labelled
        `arrival_order`."""
        ledger = self._ledger
        for ticket in ledger.open.values():
            if ticket.condition_active and ticket.asset in storm.upstream_hits:
                self._name_root(
                    storm, ticket.key, ticket.asset, ticket.fault_code, ticket.first_seen
                )
        for member in storm.members.values():
            if member.asset in storm.upstream_hits:
                self._name_root(
                    storm, member.key, member.asset, member.fault_code, member.first_seen
                )
        if storm.root is None:
            earliest = storm.earliest()
            if earliest is not None:
                storm.root = RootCause(
                    earliest.key, earliest.asset, earliest.fault_code, earliest.first_seen,
                    "arrival_order",
                )  # fmt: skip

    async def _open_group_incident(
        self,
        storm: GroupStorm,
        ts: float,
        key: str | None,
        finding: Finding | None,
        *,
        urgent: bool = False,
        predecessor: Ticket | None = None,
    ) -> Ticket:
        """The group crossed its threshold: one incident, with the window's new conditions as
        members. Those with an open ticket are linked; held ones and this one are folded."""
        ledger = self._ledger
        storm.started_at = ts
        storm.predecessor = predecessor.id if predecessor is not None else None
        for arrival in storm.arrivals:
            profile = ledger.profile(arrival.asset)
            new = arrival.key not in storm.members
            self.groups.add_member(
                storm, arrival.key, arrival.asset, arrival.fault_code, profile.area, arrival.ts
            )
            if new:
                self._index_upstream(storm, arrival.asset)
            if arrival.key in ledger.open:
                storm.linked.add(arrival.key)
        for held_key, held in storm.held.items():
            self.groups.fold(storm, held_key, held)
        ledger.counters.flood_members += len(storm.held)
        storm.held.clear()
        storm.hold_until = None
        if key is not None and finding is not None and not urgent:
            self.groups.fold(storm, key, finding)
            ledger.counters.flood_members += 1
        self._root_by_topology(storm)
        incident = await self._open_group_ticket(storm, ts, predecessor)
        if key is not None and finding is not None and urgent:
            await self._opener.open_or_recur(key, finding, incident_id=incident.id)
        self.groups.incidents_started += 1
        self.groups.mark(storm, urgent=True)
        log.warning(
            "Storm of group `%s`: more than %d new conditions in %.0f h; incident `%s` (%d"
            " members, root cause %s by %s).",
            storm.key,
            self.groups.threshold,
            self.groups.window_s / 3600,
            incident.id,
            len(storm.members),
            storm.root.asset if storm.root else "-",
            storm.root.named_by if storm.root else "-",
        )
        return incident

    async def _open_group_ticket(
        self, storm: GroupStorm, ts: float, predecessor: Ticket | None
    ) -> Ticket:
        ledger = self._ledger
        asset = group_asset(storm.labels)
        summary = storm.summary()
        # Routing of the incident: one area if the group stays in one, else the site.
        ledger.assets[asset] = AssetProfile(
            asset, storm.labels.get("asset_class", "storm"), area=summary["area"]
        )
        incident_key = dedup_key(ledger.site, asset, FaultCode.ALARM_FLOOD, GROUP_DETECTOR)
        storm.incident_key = incident_key
        earlier = ledger.open.get(incident_key)
        if earlier is not None:
            await self._publish_group(storm, ts, force=True, reason="storm_again")
            return ledger.open[incident_key]
        root = storm.root
        priority = Priority.P0 if self.groups.p0(storm, ts) else Priority.P1
        scope = "site" if summary["scope"] == "site" else f"area {summary['area']}"
        message = (
            f"Storm of {len(storm.members)} new {storm.labels.get('fault_code', '')} conditions"
            f" ({storm.key}) in {self.groups.window_s / 3600:.0f} h, {scope}"
        )
        if root is not None:
            message += f"; suspected root cause {root.fault_code} on {root.asset} ({root.named_by})"
        finding = Finding(
            asset=asset,
            fault_code=FaultCode.ALARM_FLOOD,
            severity=priority,
            score=float(len(storm.members)),
            detector=GROUP_DETECTOR,
            message=message + ".",
            ts=ts,
            evidence={"incident": summary},
        )
        linked = sorted(ledger.open[k].id for k in storm.linked if k in ledger.open)
        incident = await self._opener.open_or_recur(
            incident_key,
            finding,
            fresh=True,
            incident=summary,
            linked_tickets=linked,
            successor_of=predecessor.id if predecessor is not None else None,
        )
        storm.published_members = len(storm.members)
        storm.published_at = ts
        storm.published_root = root.key if root is not None else None
        ledger.counters.incidents += 1
        return incident

    async def _publish_group(
        self, storm: GroupStorm, ts: float, *, force: bool, reason: str | None = None
    ) -> None:
        """The incident's update: throttled to one a minute for new members, at once for an
        escalation to P0 or a newly named root cause."""
        ledger = self._ledger
        incident = ledger.open.get(storm.incident_key or "")
        if incident is None:
            return
        p0 = self.groups.p0(storm, ts)
        priority = Priority.most_urgent(incident.priority, Priority.P0 if p0 else Priority.P1)
        escalated = priority is not incident.priority
        root_key = storm.root.key if storm.root is not None else None
        new_root = root_key != storm.published_root
        # A storm lasts days: new members are published at most once a minute, and only when
        # they grew the incident by a tenth or an hour went by (a 48 h storm of 2173 members
        # is about a hundred updates, not one per member).
        elapsed = ts - storm.published_at
        grown = len(storm.members) - storm.published_members
        due = elapsed >= ledger.policy.incident_update_interval_s and grown > 0
        due = due and (grown >= max(1, storm.published_members // 10) or elapsed >= HOUR)
        if not (force or escalated or new_root or due):
            return
        summary = storm.summary()
        if reason is None:
            reason = "escalated" if escalated else ("root_cause" if new_root else "members")
        updated, event = tickets.annotate(
            incident,
            "updated",
            ts,
            {
                "reason": reason,
                "member_count": len(storm.members),
                "priority": priority.value,
                "previous_priority": incident.priority.value if escalated else None,
                "suspected_root_cause": summary["suspected_root_cause"],
            },
            priority=priority,
            last_seen=max(incident.last_seen, ts),
            occurrences=max(incident.occurrences, storm.total_arrivals),
            evidence=dict(incident.evidence) | {"incident": summary},
            attributes=tickets.with_attributes(incident, incident=summary),
        )
        await ledger.commit(updated, [event])
        storm.published_members = len(storm.members)
        storm.published_at = ts
        storm.published_root = root_key
        self.groups.mark(storm, urgent=False)
        if escalated:
            ledger.counters.escalated += 1
            log.warning("Incident `%s` escalated to %s.", incident.id, priority)

    async def advance_groups(self, now: float) -> None:
        """Holds that ran out open their conditions as usual; incidents publish due updates."""
        for storm in self.groups.groups():
            if storm.hold_until is not None and now >= storm.hold_until:
                await self._release(storm, now)
            if storm.incident_key is not None:
                await self._publish_group(storm, now, force=False)
        self.groups.forget_idle(now)

    async def _release(self, storm: GroupStorm, now: float) -> None:
        """group_wait is over and the group stayed at or below its threshold: each held
        condition is opened as it would have been (a flood of its area may still fold it)."""
        ledger = self._ledger
        held = sorted(storm.held.items(), key=lambda item: item[1].ts)
        for key, finding in held:
            if key not in ledger.open:
                # Opened as raised; a condition that cleared while held says so at once.
                await self.ungrouped(key, replace(finding, active=True))
                ticket = ledger.open.get(key)
                gone = not finding.active or not ledger.condition_active(key)
                if ticket is not None and ticket.condition_active and gone:
                    cleared, event = tickets.clear_condition(ticket, None, now)
                    await ledger.commit(cleared, [event])
            del storm.held[key]
            self.groups.mark_member(storm, key, urgent=True)
        storm.hold_until = None
        self.groups.mark(storm, urgent=True)

    def group_quieting(self, ticket: Ticket) -> GroupStorm | None:
        """The storm whose open incident quiets this ticket (one of its group's tickets from
        before the incident)."""
        finding_group = group_labels(
            self._ledger.policy.group_by,
            self._ledger.site,
            self._ledger.profile(ticket.asset),
            ticket.fault_code,
        )
        storm = self.groups.get(group_key(finding_group))
        if storm is None or ticket.key not in storm.linked:
            return None
        return storm if storm.incident_key in self._ledger.open else None

    async def _incident_closed(self, ticket: Ticket) -> None:
        """The central system closed an incident. Its members still active are not forgotten:
        more than the group threshold of them stay on a successor incident, fewer get a ticket
        each (`after_incident`). Tickets whose changes it folded quietly are caught up."""
        if ticket.fault_code != FaultCode.ALARM_FLOOD:
            return
        ledger = self._ledger
        now = ledger.clock.now()
        if ticket.detector == GROUP_DETECTOR:
            storm = next(
                (g for g in self.groups.with_incident() if g.incident_key == ticket.key), None
            )
            if storm is None:
                return
            faults = {
                k: f for k, f in sorted(storm.faults.items()) if f.active and k not in ledger.open
            }
            quieted = sorted(storm.quieted)
            for up, names in list(self._upstream_of.items()):
                names.discard(storm.key)
                if not names:
                    del self._upstream_of[up]
            self.groups.end_incident(storm)
            for key in quieted:
                await self._catch_up(key, now)
            if len(faults) > self.groups.threshold:
                for key, finding in faults.items():
                    self._add_member(storm, key, finding)
                    self.groups.fold(storm, key, finding)
                await self._open_group_incident(storm, now, None, None, predecessor=ticket)
                return
            await self._ticket_each(faults, ticket)
        elif ticket.detector == FLOOD_DETECTOR:
            # Whatever the floods that fed it (ended long ago, or a second one going on):
            # every condition the incident folded, still active and without a ticket.
            folded = self.folds.take(ticket.key)
            flood = next((f for f in self.storms.floods() if f.incident_key == ticket.key), None)
            if flood is not None:
                # Folded before `flood_folds` kept them (a state.db from an older version).
                older = (k for k in flood.folded if k not in folded)
                folded |= {k: f for k in older if (f := ledger.last_active.get(k))}
                flood.changed.update(flood.folded)
                flood.folded.clear()
                flood.incident_key = None
            active = {
                k: ledger.last_active.get(k, f)
                for k, f in sorted(folded.items())
                if f.active and ledger.condition_active(k) and k not in ledger.open
            }
            await self._ticket_each(active, ticket)

    async def _ticket_each(self, keys: Mapping[str, Finding], incident: Ticket) -> None:
        for key, finding in keys.items():
            await self._opener.open_or_recur(key, finding, after_incident=incident.id)
        if keys:
            log.warning(
                "Incident `%s` closed with %d members still active: a ticket each.",
                incident.id,
                len(keys),
            )
