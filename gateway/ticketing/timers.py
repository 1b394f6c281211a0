"""What happens as time passes, without a new finding. The app calls `advance` about
once a second, in this order:

1. condition on- and off-delays that ran out (see `findings`);
2. timed shelves and maintenance windows that ended;
3. chattering that calmed down (the withheld clear is reported then);
4. stale conditions: active for over `stale_after_s` (24 h), reported once (`condition_stale`);
5. the escalation policy (see `escalation`): warnings, breaches, levels and `unattended`, with
   an end; the priority stays the fault's;
6. eradication: a close not followed by its signature for 30 days gets `eradicated`;
7. incident updates and the end of floods (see `incidents`).

Steps 1, 2, 4, 5 and 6 have due times known in advance: each is kept in a deadline queue
(`deadlines`; the ledger's queues, and the outcomes' for eradication) wherever it changes, and
a tick pops only what is due, so its cost does not grow with the open tickets and conditions
of a storm. What is popped is checked against the live state (the comparison with `now` a
full scan makes), so the events and their times are those of a full scan.
"""

from __future__ import annotations

import logging

from gateway.core.records import ConditionState
from gateway.ticketing import escalation, tickets
from gateway.ticketing.deadlines import run_due
from gateway.ticketing.findings import FindingRouter
from gateway.ticketing.incidents import Incidents
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.noise import ConditionFlag

log = logging.getLogger(__name__)

# Eradication is a matter of days: looking once a minute is plenty and keeps the tick cheap.
ERADICATION_CHECK_S = 60.0


class Timers:
    def __init__(self, ledger: Ledger, router: FindingRouter, incidents: Incidents) -> None:
        self._ledger = ledger
        self._router = router
        self._incidents = incidents
        self._next_eradication_check = 0.0

    async def advance(self, now: float) -> None:
        await self._router.advance_conditions(now)
        await self._expire_shelves(now)
        await self._expire_maintenance(now)
        await self._router.end_chattering(now)
        await self._mark_stale(now)
        await self._escalate(now)
        await self._eradicate(now)
        await self._incidents.advance(now)

    async def _expire_shelves(self, now: float) -> None:
        await run_due(self._ledger.shelve_ends, now, self._end_shelve)

    async def _end_shelve(self, key: str, now: float) -> None:
        ledger = self._ledger
        shelving = ledger.shelves.get(key)
        if shelving is None or shelving.active(now):
            return  # unshelved meanwhile, or shelved again for longer (due on its own)
        ticket = ledger.open.get(key)
        if ticket is not None:
            await ledger.unshelve(ticket, "timer", now)
        else:
            await ledger.forget_shelving(key)

    async def _expire_maintenance(self, now: float) -> None:
        await run_due(self._ledger.maintenance_ends, now, self._end_maintenance)

    async def _end_maintenance(self, asset: str, now: float) -> None:
        ledger = self._ledger
        until = ledger.maintenance.get(asset)
        if until is None or now < until:
            return
        await ledger.noise.clear_maintenance(asset)
        del ledger.maintenance[asset]
        log.info("Asset `%s` is back from maintenance mode.", asset)

    async def _mark_stale(self, now: float) -> None:
        await run_due(self._ledger.stale_at, now, self._stale)

    async def _stale(self, key: str, now: float) -> None:
        ledger = self._ledger
        stale_after_s = ledger.policy.stale_after_s
        condition = ledger.conditions.get(key)
        if condition is None or condition.state is not ConditionState.ACTIVE:
            return
        if now - condition.since < stale_after_s:
            ledger.set_condition(condition)  # due by the queue's sum, not yet by this test
            return
        flags = ledger.flags_of(key)
        if ConditionFlag.STALE in flags:
            return
        flags.add(ConditionFlag.STALE)
        log.warning("Condition `%s` active for over %.0f h: stale.", key, stale_after_s / 3600)
        ticket = ledger.open.get(key)
        if ticket is None or "stale" in ticket.attributes:
            return  # reported once per ticket, also across a restart (STALE is rebuilt)
        stale, event = tickets.annotate(
            ticket,
            "condition_stale",
            now,
            {"active_since": condition.since, "active_for_s": now - condition.since},
            attributes=tickets.with_attributes(ticket, stale={"since": condition.since}),
        )
        await ledger.commit(stale, [event])

    async def _escalate(self, now: float) -> None:
        """The escalation policy (see `escalation`): warnings, breaches, levels, unattended."""
        await run_due(self._ledger.escalation_at, now, self._escalate_ticket)

    async def _escalate_ticket(self, key: str, now: float) -> None:
        ledger = self._ledger
        ticket = ledger.open.get(key)
        if ticket is None:
            return
        clocks, steps = escalation.due_steps(ticket, ledger.policy, now)
        if not steps:
            ledger.keep_open(ticket)  # schedules its next step
            return
        changed = ticket
        events = []
        for step in steps:
            attrs = dict(changed.attributes) | {"escalation": clocks}
            if step.kind == "unattended":
                attrs["unattended"] = {"at": now, "clock": step.detail["clock"]}
            changed, event = tickets.annotate(
                changed, step.kind, now, step.detail, attributes=attrs
            )
            events.append(event)
        await ledger.commit(changed, events)  # schedules its next step
        ledger.counters.renotified += len(steps)
        for step in steps:
            ledger.counters.escalations[step.kind] = (
                ledger.counters.escalations.get(step.kind, 0) + 1
            )
            log.warning(
                "Ticket `%s`: %s on the %s clock%s.",
                ticket.id,
                step.kind.replace("_", " "),
                step.detail["clock"],
                f" (to `{step.detail['target']}`)" if step.detail.get("target") else "",
            )

    async def _eradicate(self, now: float) -> None:
        """A close whose signature has not come back for 30 days: `eradicated`."""
        ledger = self._ledger
        outcomes = ledger.outcomes
        if now < self._next_eradication_check:
            return
        self._next_eradication_check = now + ERADICATION_CHECK_S
        await run_due(outcomes.eradication_at, now, self._eradicate_ticket)
        outcomes.prune(now)

    async def _eradicate_ticket(self, ticket_id: str, now: float) -> None:
        ledger = self._ledger
        ticket = ledger.outcomes.eradicated_by(ticket_id, now)
        if ticket is None:
            return
        assert ticket.closed_at is not None
        detail = {
            "closed_at": ticket.closed_at,
            "quiet_for_s": now - ticket.closed_at,
            "signature": ticket.key,
        }
        done, event = tickets.annotate(
            ticket,
            "eradicated",
            now,
            detail,
            attributes=tickets.with_attributes(ticket, eradicated={"at": now}),
        )
        await ledger.commit(done, [event])
        log.info("Ticket `%s`: no recurrence 30 days after the close: eradicated.", ticket.id)
