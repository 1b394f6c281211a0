"""The ticket service: findings in, committed ticket changes and their messages out.

One condition per dedup key (site + asset + fault code + detector) and at most one open ticket
per key (DESIGN.md section 6, issue 2):

- the first time a condition becomes ACTIVE, a ticket opens (event `opened`);
- when it becomes ACTIVE again while its ticket is open (after a clear, or after a restart), the
  ticket is enriched instead: occurrences + 1, last seen, peak, evidence, priority raised to
  the most urgent seen (event `updated`, reason `retriggered`);
- a more urgent finding within the same episode escalates (event `updated`, reason
  `escalated`); a repeat that changes nothing urgent is folded in quietly (see `tickets.enrich`);
- when the condition clears, `condition_cleared` is reported and the ticket stays open: only
  the central system closes tickets;
- the central `ack` command moves OPENED to ACKNOWLEDGED (event `acknowledged`).

Each change asks the encoder for the message that announces it and commits ticket, events and
messages in one transaction (`TicketRepository.commit_ticket_change`). Memory is updated only
after the commit succeeded, so a refused write leaves the service exactly as before and the
same input can be applied again.

Conditions are not persisted. After a restart every condition starts NORMAL and open tickets
are loaded from the store; a detector that still sees the fault raises it again, which counts
as one more occurrence on the open ticket (the gateway cannot know what happened while it was
down). Changes are serialised by a lock: findings and central commands arrive from different
tasks, and each change reads the ticket it then writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.interfaces import MessageEncoder, TicketEvent, TicketRepository
from gateway.core.records import Condition, ConditionState, Finding, Ticket, dedup_key
from gateway.ticketing import tickets
from gateway.ticketing.conditions import (
    ConditionPolicy,
    ConditionStep,
    Trigger,
    advance,
    normal,
    observe,
)
from gateway.ticketing.ids import TicketIds

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TicketServiceStatistics:
    open_tickets: int
    active_conditions: int
    findings: int
    opened: int
    enriched: int  # re-triggers merged into an open ticket instead of a second one
    escalated: int
    conditions_cleared: int
    acknowledged: int
    commit_failures: int


class TicketService:
    def __init__(
        self,
        site: str,
        gateway_id: str,
        repo: TicketRepository,
        encode: MessageEncoder,
        clock: Clock,
        *,
        condition_policy: ConditionPolicy | None = None,
    ) -> None:
        self._site = site
        self._repo = repo
        self._encode = encode
        self._clock = clock
        self._policy = condition_policy or ConditionPolicy()
        self._ids = TicketIds(site, gateway_id)
        self._lock = asyncio.Lock()
        self._started = False
        self._conditions: dict[str, Condition] = {}
        self._open: dict[str, Ticket] = {}  # by dedup key
        # The newest active finding per key, for a ticket opened by `advance_timers` when a
        # condition on-delay runs out with no new finding.
        self._last_active: dict[str, Finding] = {}
        self._findings = 0
        self._opened = 0
        self._enriched = 0
        self._escalated = 0
        self._cleared = 0
        self._acknowledged = 0
        self._commit_failures = 0

    async def start(self) -> None:
        """Load the open tickets, so that a trigger after a restart enriches instead of opening."""
        loaded = await self._repo.load_open_tickets()
        async with self._lock:
            self._open = {t.key: t for t in loaded}
            self._started = True
        log.info("Ticket service started with %d open tickets.", len(loaded))

    def key_of(self, finding: Finding) -> str:
        return dedup_key(self._site, finding.asset, finding.fault_code, finding.detector)

    def open_tickets(self) -> list[Ticket]:
        """The open tickets as this service knows them (for `resync` and `status`)."""
        return sorted(self._open.values(), key=lambda t: (t.opened_at, t.id))

    def ticket_for(self, key: str) -> Ticket | None:
        return self._open.get(key)

    def condition(self, key: str) -> Condition:
        return self._conditions.get(key) or normal(key)

    def statistics(self) -> TicketServiceStatistics:
        return TicketServiceStatistics(
            open_tickets=len(self._open),
            active_conditions=sum(
                1 for c in self._conditions.values() if c.state is not ConditionState.NORMAL
            ),
            findings=self._findings,
            opened=self._opened,
            enriched=self._enriched,
            escalated=self._escalated,
            conditions_cleared=self._cleared,
            acknowledged=self._acknowledged,
            commit_failures=self._commit_failures,
        )

    async def on_finding(self, finding: Finding) -> None:
        """Apply one finding. Raises `StoreError` when state.db refuses; nothing changed then."""
        self._require_started()
        key = self.key_of(finding)
        async with self._lock:
            self._findings += 1
            if finding.active:
                self._last_active[key] = finding
            step = observe(self.condition(key), finding.active, finding.ts, self._policy)
            await self._apply(step, finding)

    async def advance_timers(self) -> None:
        """Complete condition on-/off-delays that ran out with no new finding.

        Only needed when the condition policy has delays; the app calls it periodically then.
        """
        self._require_started()
        now = self._clock.now()
        async with self._lock:
            for key, condition in list(self._conditions.items()):
                step = advance(condition, now, self._policy)
                if step.trigger is not None or step.changed:
                    # PENDING only ever follows an active finding, so RAISED finds one here.
                    await self._apply(step, self._last_active.get(key))

    async def acknowledge(self, ticket_id: str, central_id: str | None, ts: float) -> Ticket | None:
        """The central `ack` command. Returns the ticket after the command, or None when no open
        ticket has that id. Acknowledging twice changes nothing the second time.
        """
        self._require_started()
        async with self._lock:
            ticket = next((t for t in self._open.values() if t.id == ticket_id), None)
            if ticket is None:
                log.warning("Acknowledgement for unknown or closed ticket `%s` ignored.", ticket_id)
                return None
            acked, event = tickets.acknowledge(ticket, central_id, ts)
            if event is None:
                return ticket
            await self._commit(acked, [event])
            self._open[acked.key] = acked
            self._acknowledged += 1
            log.info(
                "Ticket `%s` acknowledged by the central system as `%s`.",
                acked.id,
                acked.central_id or "-",
            )
            return acked

    # --- one step ---------------------------------------------------------------------------

    async def _apply(self, step: ConditionStep, finding: Finding | None) -> None:
        """Turn a condition step into a ticket change, commit it, then update memory."""
        key = step.after.key
        ticket = self._open.get(key)
        trigger = step.trigger
        if trigger in (Trigger.RAISED, Trigger.REPEATED) and finding is not None:
            if ticket is None:
                await self._open_ticket(key, finding)
            else:
                await self._enrich(ticket, finding, new_occurrence=trigger is Trigger.RAISED)
        elif trigger is Trigger.CLEARED and ticket is not None and ticket.condition_active:
            clearing_finding = finding if finding is not None and not finding.active else None
            cleared, event = tickets.clear_condition(ticket, clearing_finding, step.after.since)
            await self._commit(cleared, [event])
            self._open[key] = cleared
            self._cleared += 1
            log.info(
                "Condition `%s` cleared; ticket `%s` stays open until the central system"
                " closes it.",
                key,
                ticket.id,
            )
        if step.changed:
            log.debug("Condition `%s`: %s -> %s.", key, step.before.state, step.after.state)
        self._conditions[key] = step.after

    async def _open_ticket(self, key: str, finding: Finding) -> None:
        opened_at = self._clock.now()
        ticket_id = await self._free_ticket_id(opened_at)
        ticket, event = tickets.open_ticket(ticket_id, key, self._site, finding, opened_at)
        await self._commit(ticket, [event])
        self._open[key] = ticket
        self._opened += 1
        log.info(
            "Opened ticket `%s` at %s for `%s`: %s",
            ticket.id,
            ticket.priority,
            key,
            ticket.message,
        )

    async def _enrich(self, ticket: Ticket, finding: Finding, *, new_occurrence: bool) -> None:
        enriched, event = tickets.enrich(ticket, finding, new_occurrence=new_occurrence)
        if event is not None:
            await self._commit(enriched, [event])
        self._open[enriched.key] = enriched
        if event is None:
            return
        escalated = enriched.priority is not ticket.priority
        self._enriched += int(new_occurrence)
        self._escalated += int(escalated)
        log.info(
            "Ticket `%s` enriched instead of opening another: occurrence %d, priority %s%s.",
            enriched.id,
            enriched.occurrences,
            enriched.priority,
            f" (escalated from {ticket.priority})" if escalated else "",
        )

    async def _commit(self, ticket: Ticket, events: Iterable[TicketEvent]) -> None:
        events = list(events)
        messages = [self._encode(ticket, event) for event in events]
        try:
            await self._repo.commit_ticket_change(ticket, events, messages)
        except StoreError as exc:
            self._commit_failures += 1
            log.error(
                "Ticket `%s` revision %d not committed, nothing changed: %s",
                ticket.id,
                ticket.revision,
                exc,
            )
            raise

    async def _free_ticket_id(self, opened_at: float) -> str:
        """The next id not used by any ticket, open or closed (see `ids`)."""
        in_memory = {t.id for t in self._open.values()}
        while True:
            candidate = self._ids.next_candidate(opened_at)
            if candidate in in_memory:
                continue
            if await self._repo.get_ticket(candidate) is None:
                return candidate

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("TicketService.start() must complete before findings arrive")
