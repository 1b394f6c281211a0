"""From findings to ticket changes: the condition per dedup key and the noise control that gates
what it reports (ANSI/ISA-18.2 practice, DESIGN.md section 6).

- The first time a condition becomes ACTIVE a ticket opens (see `opening`); when it becomes
  ACTIVE again while its ticket is open, the ticket is enriched instead.
- When the condition clears, `condition_cleared` is reported and the ticket stays open: only
  the central system closes tickets.
- Gates: SUPPRESSED (asset stopped, upstream link lost) and OUT_OF_SERVICE (maintenance) open
  nothing; SHELVED reports nothing; CHATTERING keeps the one ticket, counts re-raises quietly,
  withholds clears until the chatter ends and raises a tuning advisory; a flood in the area
  folds new conditions into the area's incident (see `incidents`).
- Topology: a lost link raises one `comm.lost` condition for the link itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.core.records import (
    Condition,
    ConditionState,
    FaultCode,
    Finding,
    Priority,
    Sample,
    Ticket,
    TicketState,
)
from gateway.ticketing import tickets
from gateway.ticketing.conditions import ConditionStep, Trigger, advance, observe
from gateway.ticketing.deadlines import run_due
from gateway.ticketing.incidents import Incidents
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.noise import ChatterTracker, ConditionFlag
from gateway.ticketing.opening import TicketOpener
from gateway.ticketing.statistics import Advisory
from gateway.ticketing.topology import Link, LinkChange, LinkWatcher
from gateway.ticketing.verifier import RepairVerifier

log = logging.getLogger(__name__)

TOPOLOGY_DETECTOR = "topology"


class FindingRouter:
    def __init__(
        self,
        ledger: Ledger,
        opener: TicketOpener,
        incidents: Incidents,
        verifier: RepairVerifier,
        links: Sequence[Link],
    ) -> None:
        self._ledger = ledger
        self._opener = opener
        self._incidents = incidents
        self._verifier = verifier
        self.links = LinkWatcher(links)
        policy = ledger.policy
        self.chatter = ChatterTracker(policy.chatter_cycles, policy.chatter_window_s)

    async def on_finding(self, finding: Finding) -> None:
        ledger = self._ledger
        key = ledger.key_of(finding)
        ledger.counters.findings += 1
        if finding.active:
            suppression = self._suppression(finding)
            flags = ledger.flags_of(key)
            if suppression is not None:
                flag, reason = suppression
                ledger.counters.suppressed += 1
                if flag not in flags:
                    flags.add(flag)
                    log.info("Condition `%s` %s: %s.", key, flag.value.lower(), reason)
                return
            if flags & {ConditionFlag.SUPPRESSED, ConditionFlag.OUT_OF_SERVICE}:
                flags -= {ConditionFlag.SUPPRESSED, ConditionFlag.OUT_OF_SERVICE}
                log.info("Condition `%s` no longer suppressed.", key)
            ledger.last_active[key] = finding
        step = observe(ledger.condition(key), finding.active, finding.ts, ledger.condition_policy)
        await self._apply(step, finding)

    def resume_storm_conditions(self, raised: Sequence[Finding]) -> None:
        """Held and folded conditions of a storm still active after a restart: ACTIVE, with
        the finding that raised them."""
        ledger = self._ledger
        for finding in raised:
            key = ledger.key_of(finding)
            ledger.set_condition(Condition(key, ConditionState.ACTIVE, finding.ts))
            ledger.last_active[key] = finding

    def resume_conditions(self, open_tickets: Sequence[Ticket]) -> None:
        """After a restart, the condition of each open ticket still marked active is ACTIVE
        again rather than NORMAL: its detector, told so, reports the clear when fresh data is
        normal, and a raise on fresh data continues the episode instead of re-triggering it. A
        lost link is lost until one of its tags answers."""
        ledger = self._ledger
        for ticket in open_tickets:
            if not ticket.condition_active:
                continue
            ledger.set_condition(Condition(ticket.key, ConditionState.ACTIVE, ticket.last_seen))
            if ticket.detector == TOPOLOGY_DETECTOR:
                self.links.resume_lost(ticket.asset)

    async def observe_links(self, samples: Sequence[Sample]) -> None:
        for change in self.links.observe(samples):
            await self._on_link_change(change)

    async def advance_conditions(self, now: float) -> None:
        """On- and off-delays that ran out without a new finding: only the conditions whose
        delay is due (`Ledger.delay_ends`), not every condition of a storm."""
        await run_due(self._ledger.delay_ends, now, self._end_delay)

    async def _end_delay(self, key: str, now: float) -> None:
        ledger = self._ledger
        condition = ledger.conditions.get(key)
        if condition is None or condition.state not in (
            ConditionState.PENDING,
            ConditionState.CLEARING,
        ):
            return
        step = advance(condition, now, ledger.condition_policy)
        if step.trigger is not None or step.changed:
            await self._apply(step, ledger.last_active.get(key))
        else:
            ledger.set_condition(condition)  # due by the queue's sum, not yet by `advance`

    async def end_chattering(self, now: float) -> None:
        ledger = self._ledger
        for key in sorted(ledger.chattering):
            flags = ledger.flags_of(key)
            if ConditionFlag.CHATTERING not in flags or self.chatter.is_chattering(key, now):
                continue
            flags.discard(ConditionFlag.CHATTERING)
            ledger.chattering.discard(key)
            log.info("Condition `%s` no longer chattering.", key)
            ticket = ledger.open.get(key)
            cleared = ledger.condition(key).state is ConditionState.NORMAL
            if ticket is not None and ticket.condition_active and cleared:
                await self._on_cleared(key, None, now)  # the clear withheld while chattering

    def _suppression(self, finding: Finding) -> tuple[ConditionFlag, str] | None:
        if finding.fault_code == FaultCode.COMM_LOST and self.links.is_link(finding.asset):
            return None
        link = self.links.inhibiting(finding.asset)
        if link is not None:
            return ConditionFlag.SUPPRESSED, f"upstream link `{link.id}` is lost"
        if self._ledger.in_maintenance(finding.asset) is not None:
            return ConditionFlag.OUT_OF_SERVICE, "asset in maintenance mode"
        if not self._ledger.run_states.running(finding.asset):
            return ConditionFlag.SUPPRESSED, "asset stopped"
        return None

    async def _apply(self, step: ConditionStep, finding: Finding | None) -> None:
        """Turn a condition step into a ticket change, commit it, then update memory."""
        ledger = self._ledger
        key = step.after.key
        trigger = step.trigger
        if trigger in (Trigger.RAISED, Trigger.REPEATED) and finding is not None:
            await self._on_raised(key, finding, new_episode=trigger is Trigger.RAISED)
        elif trigger is Trigger.CLEARED:
            await self._on_cleared(key, finding, step.after.since)
        if step.changed:
            log.debug("Condition `%s`: %s -> %s.", key, step.before.state, step.after.state)
        if step.after.state is ConditionState.NORMAL:
            ledger.flags.get(key, set()).discard(ConditionFlag.STALE)
        ledger.set_condition(step.after)

    async def _on_raised(self, key: str, finding: Finding, *, new_episode: bool) -> None:
        ledger = self._ledger
        ticket = ledger.open.get(key)
        if new_episode and self.chatter.raised(key, finding.ts):
            self._flag_chattering(key, finding.ts)
        shelving = ledger.shelves.get(key)
        if shelving is not None and shelving.active(ledger.clock.now()):
            ledger.counters.shelved_hits += 1
            return
        if ticket is not None:
            if ticket.state is TicketState.VERIFYING and new_episode:
                await self._verifier.fault_came_back(key)
                return
            if ledger.has_flag(key, ConditionFlag.CHATTERING) and new_episode:
                # The one ticket stays; a chattering re-raise is counted quietly and travels
                # with the next reported change (ISA-18.2: do not annunciate chatter).
                self._opener.enrich_quietly(ticket, finding)
                return
            quiet = self._incidents.quieting(ticket) if new_episode else None
            if quiet is not None:
                # During a flood (or while a storm's incident is open, for the tickets its
                # group had before it) the incident carries the counts; the ticket is enriched
                # quietly and brought up to date once when the flood ends.
                self._incidents.count_quieted(key, finding, quiet)
                self._opener.enrich_quietly(ticket, finding)
                return
            await self._opener.enrich(ticket, finding, new_occurrence=new_episode)
            flood = self._incidents.arrive(key, finding) if new_episode else None
            if flood is not None:
                await self._incidents.incident_for(flood, finding.ts)
            return
        if not new_episode:
            return  # closed by the central system while still active: wait for a new episode
        if self._incidents.folded_into(key, finding.asset) is not None:
            self._incidents.arrive(key, finding)
            self._incidents.folds.raised(key, finding)
            ledger.counters.flood_members += 1
            return
        if self._incidents.folded_in_group(key, finding):
            ledger.counters.flood_members += 1
            return
        if await self._incidents.grouped(key, finding):
            return
        await self._incidents.ungrouped(key, finding)

    async def _on_cleared(self, key: str, finding: Finding | None, ts: float) -> None:
        ledger = self._ledger
        shelving = ledger.shelves.get(key)
        ticket = ledger.open.get(key)
        if shelving is not None and shelving.until is None:
            # A one-shot shelve ends when its condition clears.
            if ticket is not None:
                ticket = await ledger.unshelve(ticket, "one-shot", ts)
            else:
                await ledger.forget_shelving(key)
        if ticket is None:
            self._incidents.note_cleared(key)
            return
        if not ticket.condition_active:
            return
        if ledger.has_flag(key, ConditionFlag.CHATTERING):
            return  # withheld while chattering; reported when the chatter ends
        quiet = self._incidents.quieting(ticket)
        if quiet is not None:
            self._incidents.quiet(key, quiet)
            return  # withheld during the area's flood (or the storm); reported when it ends
        clearing_finding = finding if finding is not None and not finding.active else None
        cleared, event = tickets.clear_condition(ticket, clearing_finding, ts)
        await ledger.commit(cleared, [event])
        ledger.counters.cleared += 1
        log.info(
            "Condition `%s` cleared; ticket `%s` stays open until the central system closes it.",
            key,
            ticket.id,
        )

    def _flag_chattering(self, key: str, ts: float) -> None:
        flags = self._ledger.flags_of(key)
        if ConditionFlag.CHATTERING in flags:
            return
        flags.add(ConditionFlag.CHATTERING)
        self._ledger.chattering.add(key)
        advisory = Advisory(
            key,
            "chattering",
            ts,
            f"Condition {key} chatters ({self.chatter.cycles(key)} cycles in "
            f"{self._ledger.policy.chatter_window_s:.0f} s): widen its deadband or lengthen its "
            "off-delay.",
        )
        self._ledger.counters.advise(advisory)
        log.warning("Condition `%s` is chattering; clears are withheld. %s", key, advisory.message)

    async def _on_link_change(self, change: LinkChange) -> None:
        link = change.link
        if change.lost:
            log.warning(
                "Link `%s` lost (%s): findings of %d asset(s) behind it are suppressed.",
                link.id,
                change.reason,
                len(link.assets),
            )
            message = (
                f"Communication with {link.kind} link {link.id} lost ({change.reason}); "
                f"{len(link.assets)} device(s) behind it are not monitored."
            )
        else:
            log.info("Link `%s` answering again.", link.id)
            message = f"Communication with {link.kind} link {link.id} restored."
        finding = Finding(
            asset=link.id,
            fault_code=FaultCode.COMM_LOST,
            severity=Priority.P2,
            score=1.0,
            detector=TOPOLOGY_DETECTOR,
            message=message,
            ts=change.ts,
            active=change.lost,
            evidence={"link_kind": link.kind, "assets_behind": sorted(link.assets)[:20]},
        )
        await self.on_finding(finding)
