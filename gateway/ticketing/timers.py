"""What happens as time passes, without a new finding (issue 5). The app calls `advance` about
once a second, in this order:

1. condition on- and off-delays that ran out (see `findings`);
2. timed shelves and maintenance windows that ended;
3. chattering that calmed down (the withheld clear is reported then);
4. stale conditions: active for over `stale_after_s` (24 h), reported once (`condition_stale`);
5. SLA re-notification: a ticket still OPENED or REOPENED past its respond-by is `renotified`
   with its priority raised one step and a new respond-by;
6. incident updates and the end of floods (see `incidents`).
"""

from __future__ import annotations

import logging

from gateway.core.records import ConditionState
from gateway.ticketing import tickets
from gateway.ticketing.findings import FindingRouter
from gateway.ticketing.incidents import Incidents
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.noise import ConditionFlag

log = logging.getLogger(__name__)


class Timers:
    def __init__(self, ledger: Ledger, router: FindingRouter, incidents: Incidents) -> None:
        self._ledger = ledger
        self._router = router
        self._incidents = incidents

    async def advance(self, now: float) -> None:
        await self._router.advance_conditions(now)
        await self._expire_shelves(now)
        await self._expire_maintenance(now)
        await self._router.end_chattering(now)
        await self._mark_stale(now)
        await self._renotify(now)
        await self._incidents.advance(now)

    async def _expire_shelves(self, now: float) -> None:
        ledger = self._ledger
        for key, shelving in list(ledger.shelves.items()):
            if shelving.active(now):
                continue
            ticket = ledger.open.get(key)
            if ticket is not None:
                await ledger.unshelve(ticket, "timer", now)
            else:
                await ledger.forget_shelving(key)

    async def _expire_maintenance(self, now: float) -> None:
        ledger = self._ledger
        for asset, until in list(ledger.maintenance.items()):
            if now >= until:
                await ledger.noise.clear_maintenance(asset)
                del ledger.maintenance[asset]
                log.info("Asset `%s` is back from maintenance mode.", asset)

    async def _mark_stale(self, now: float) -> None:
        ledger = self._ledger
        stale_after_s = ledger.policy.stale_after_s
        for key, condition in ledger.conditions.items():
            if (
                condition.state is not ConditionState.ACTIVE
                or now - condition.since < stale_after_s
            ):
                continue
            flags = ledger.flags_of(key)
            if ConditionFlag.STALE in flags:
                continue
            flags.add(ConditionFlag.STALE)
            log.warning("Condition `%s` active for over %.0f h: stale.", key, stale_after_s / 3600)
            ticket = ledger.open.get(key)
            if ticket is None:
                continue
            stale, event = tickets.annotate(
                ticket,
                "condition_stale",
                now,
                {"active_since": condition.since, "active_for_s": now - condition.since},
            )
            await ledger.commit(stale, [event])

    async def _renotify(self, now: float) -> None:
        ledger = self._ledger
        for ticket in list(ledger.open.values()):
            if ticket.state not in tickets.ACKNOWLEDGEABLE or ticket.respond_by is None:
                continue
            if now <= ticket.respond_by:
                continue
            raised = ticket.priority.raised()
            sla = ledger.policy.sla_for(raised)
            count = int(ticket.attributes.get("renotifications", 0)) + 1
            renotified, event = tickets.annotate(
                ticket,
                "renotified",
                now,
                {
                    "reason": "unacknowledged past respond-by",
                    "missed_respond_by": ticket.respond_by,
                    "priority": raised.value,
                    "previous_priority": ticket.priority.value,
                    "renotifications": count,
                },
                priority=raised,
                respond_by=now + sla.respond_s,
                attributes=tickets.with_attributes(ticket, renotifications=count),
            )
            await ledger.commit(renotified, [event])
            ledger.counters.renotified += 1
            log.warning(
                "Ticket `%s` unacknowledged past its respond-by: re-notified at %s.",
                ticket.id,
                raised,
            )
