"""Opening, reopening and enriching tickets (DESIGN.md section 6).

- A new ticket carries at birth its SLA deadlines, routing, failure coding (ISO 14224 and the
  site's CMMS codes), knowledge-base actions, the pre-fault baseline of the asset's tags and a
  telemetry summary.
- Recurrence: a key closed within `reopen_within_s` (72 h) reopens its old ticket; within
  `recurrence_within_s` (30 days) the new ticket names it in `recurrence_of`.
- A new trigger of an open ticket enriches it instead (`updated`, reason `retriggered`), and a
  more urgent finding escalates it (reason `escalated`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from gateway.core.records import ISO14224_FAILURE_MODE, Finding, Ticket, TicketState
from gateway.ticketing import escalation, tickets
from gateway.ticketing.knowledge import KnowledgeBase
from gateway.ticketing.ledger import Ledger

log = logging.getLogger(__name__)


class TicketOpener:
    def __init__(self, ledger: Ledger, knowledge: KnowledgeBase) -> None:
        self._ledger = ledger
        self._knowledge = knowledge

    async def open_or_recur(
        self,
        key: str,
        finding: Finding,
        *,
        incident_id: str | None = None,
        fresh: bool = False,
        **extra: Any,
    ) -> Ticket:
        """`fresh`: a new ticket whatever was closed before (a successor incident is not a
        recurrence of the one the central system just closed)."""
        ledger = self._ledger
        now = ledger.clock.now()
        if fresh:
            return await self._open_ticket(key, finding, incident_id=incident_id, **extra)
        last = await ledger.tickets.last_closed_ticket(key)
        since_close = now - last.closed_at if last and last.closed_at is not None else None
        if (
            last is not None
            and since_close is not None
            and last.state is TicketState.CLOSED
            and since_close <= ledger.policy.reopen_within_s
        ):
            return await self._reopen(last, finding, since_close)
        recurrence_of = None
        if last is not None and since_close is not None:
            recurrence_of = last.id if since_close <= ledger.policy.recurrence_within_s else None
        ticket = await self._open_ticket(
            key, finding, recurrence_of=recurrence_of, incident_id=incident_id, **extra
        )
        if recurrence_of is not None:
            ledger.counters.recurrences += 1
            log.info("Ticket `%s` is a recurrence of `%s`.", ticket.id, recurrence_of)
        return ticket

    async def enrich(self, ticket: Ticket, finding: Finding, *, new_occurrence: bool) -> None:
        ledger = self._ledger
        enriched, event = tickets.enrich(ticket, finding, new_occurrence=new_occurrence)
        if event is None:
            ledger.open[enriched.key] = enriched
            return
        profile = ledger.profile(ticket.asset)
        evidence = dict(enriched.evidence) | ledger.telemetry_evidence(
            profile, finding.ts, signal=finding.signal
        )
        enriched = replace(enriched, evidence=evidence)
        await ledger.commit(enriched, [event])
        escalated = enriched.priority is not ticket.priority
        ledger.counters.enriched += int(new_occurrence)
        ledger.counters.escalated += int(escalated)
        log.info(
            "Ticket `%s` enriched instead of opening another: occurrence %d, priority %s%s.",
            enriched.id,
            enriched.occurrences,
            enriched.priority,
            f" (escalated from {ticket.priority})" if escalated else "",
        )

    def enrich_quietly(self, ticket: Ticket, finding: Finding) -> None:
        """One more occurrence without a message; it travels with the next reported change."""
        quiet, _ = tickets.enrich(ticket, finding, new_occurrence=False)
        self._ledger.open[ticket.key] = replace(quiet, occurrences=ticket.occurrences + 1)

    async def _open_ticket(self, key: str, finding: Finding, **attributes: Any) -> Ticket:
        ledger = self._ledger
        opened_at = ledger.clock.now()
        ticket_id = await ledger.free_ticket_id(opened_at)
        profile = ledger.profile(finding.asset)
        sla = ledger.policy.sla_for(finding.severity)
        clocks = escalation.new_clocks(ledger.policy, finding.severity, opened_at)
        respond_by, resolve_by = escalation.deadlines(clocks)
        attrs: dict[str, Any] = {
            "routing": profile.routing(ledger.site),
            "failure_coding": self._failure_coding(finding.fault_code),
            "knowledge": self._knowledge.recommend(finding.fault_code, profile.asset_class),
            "baseline": ledger.window.means(profile.tags, before=finding.ts),
            "sla": {"respond_s": sla.respond_s, "resolve_s": sla.resolve_s},
            "escalation": clocks,
        }
        attrs |= {k: v for k, v in attributes.items() if v is not None}
        ticket, event = tickets.open_ticket(
            ticket_id,
            key,
            ledger.site,
            finding,
            opened_at,
            respond_by=respond_by,
            resolve_by=resolve_by,
            attributes=attrs,
            extra_evidence=ledger.telemetry_evidence(profile, opened_at, signal=finding.signal),
        )
        await ledger.commit(ticket, [event])
        ledger.counters.opened += 1
        ledger.advise_on_quality(ticket, profile.model)
        log.info(
            "Opened ticket `%s` at %s for `%s`: %s", ticket.id, ticket.priority, key, ticket.message
        )
        return ticket

    async def _reopen(self, last: Ticket, finding: Finding, since_close: float) -> Ticket:
        ledger = self._ledger
        now = ledger.clock.now()
        clocks = escalation.new_clocks(ledger.policy, last.priority, now)
        respond_by, resolve_by = escalation.deadlines(clocks)
        profile = ledger.profile(finding.asset)
        # The close that did not hold counts as a re-reported resolution (`outcomes`).
        closes = [*list(last.attributes.get("previous_closes") or []), last.closed_at]
        attrs = dict(last.attributes) | {"escalation": clocks, "previous_closes": closes}
        for done in ("response", "resolved", "unattended", "sign_off"):
            attrs.pop(done, None)
        reopened, event = tickets.transition(
            last,
            TicketState.REOPENED,
            finding.ts,
            {"reason": "recurred", "closed_for_s": since_close},
            closed_at=None,
            condition_active=True,
            occurrences=last.occurrences + 1,
            last_seen=finding.ts,
            peak_value=tickets.more_extreme(last.fault_code, last.peak_value, finding.value),
            evidence=tickets.evidence_of(finding)
            | ledger.telemetry_evidence(profile, now, signal=finding.signal),
            respond_by=respond_by,
            resolve_by=resolve_by,
            attributes=attrs,
        )
        await ledger.commit(reopened, [event])
        ledger.counters.recurrences += 1
        ledger.counters.reopened += 1
        log.info(
            "Ticket `%s` reopened: the fault came back %.0f s after closing.", last.id, since_close
        )
        return reopened

    def _failure_coding(self, fault_code: str) -> dict[str, Any]:
        coding: dict[str, Any] = {
            "iso14224_failure_mode": ISO14224_FAILURE_MODE.get(fault_code, "OTH")
        }
        cmms = self._ledger.policy.cmms_codes.get(fault_code)
        if cmms:
            coding["cmms"] = dict(cmms)
        return coding
