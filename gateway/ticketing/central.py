"""The ticket changes central commands make (DESIGN.md section 7, issue 5).

`commands.TicketCommands` checks ids, revisions, actors and fields and replies; the methods
here apply a command that passed those checks: `ack` moves OPENED / REOPENED to ACKNOWLEDGED
and records the first response against the SLA, `assign`, `close` (CLOSED, CANCELLED, or
REPAIRED + VERIFYING when repaired), `shelve` / `unshelve`, `maintenance`, `resync` and
`snapshot` (a bounded summary, never raw samples).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.core.interfaces import TicketEvent
from gateway.core.records import Shelving, Ticket, TicketState
from gateway.ticketing import tickets
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.noise import ConditionFlag
from gateway.ticketing.verifier import RepairVerifier

log = logging.getLogger(__name__)

MAX_TICKETS_IN_SNAPSHOT = 20


@dataclass(frozen=True, slots=True)
class Resync:
    republished: int  # messages queued by this request
    already_queued: int  # tickets whose earlier resync message is still unacknowledged


class CentralActions:
    def __init__(self, ledger: Ledger, verifier: RepairVerifier) -> None:
        self._ledger = ledger
        self._verifier = verifier

    async def acknowledge(self, ticket_id: str, central_id: str | None, ts: float) -> Ticket | None:
        ledger = self._ledger
        ticket = ledger.open_ticket_by_id(ticket_id)
        if ticket is None:
            log.warning("Acknowledgement for unknown or closed ticket `%s` ignored.", ticket_id)
            return None
        acked, event = tickets.acknowledge(ticket, central_id, ts)
        if event is None:
            return ticket
        first_response = ticket.respond_by is not None and (
            "first_response_s" not in ticket.attributes
        )
        if first_response:
            seconds = ts - ticket.opened_at
            acked = replace(
                acked, attributes=tickets.with_attributes(acked, first_response_s=seconds)
            )
        await ledger.commit(acked, [event])
        ledger.counters.acknowledged += 1
        if first_response and ticket.respond_by is not None:
            # Against the respond-by set at open: a re-notification moves the deadline on,
            # but the first response was still late.
            sla = ticket.attributes.get("sla", {})
            respond_s = sla.get("respond_s") if isinstance(sla, Mapping) else None
            deadline = ticket.opened_at + float(respond_s) if respond_s else ticket.respond_by
            ledger.counters.first_responses.append((ts - ticket.opened_at, ts <= deadline))
        log.info(
            "Ticket `%s` acknowledged by the central system as `%s`.",
            acked.id,
            acked.central_id or "-",
        )
        return acked

    async def assign(self, ticket: Ticket, assignee: str, team: str | None, ts: float) -> Ticket:
        current = self._ledger.current(ticket)
        attrs = tickets.with_attributes(current, assignment={"assignee": assignee, "team": team})
        moved, event = tickets.transition(
            current,
            TicketState.ASSIGNED,
            ts,
            {"assignee": assignee, "team": team},
            attributes=attrs,
        )
        await self._ledger.commit(moved, [event])
        log.info("Ticket `%s` assigned to `%s`.", moved.id, assignee)
        return moved

    async def close(
        self,
        ticket: Ticket,
        *,
        resolution: str,
        cause: str | None,
        repaired: bool,
        ts: float,
        cancel_reason: str | None = None,
    ) -> Ticket:
        ledger = self._ledger
        current = ledger.current(ticket)
        resolution_attr = {"resolution": resolution, "cause": cause, "repaired": repaired}
        attrs = tickets.with_attributes(current, resolution=resolution_attr)
        if cancel_reason is not None:
            moved, event = tickets.transition(
                current,
                TicketState.CANCELLED,
                ts,
                {"reason": cancel_reason},
                closed_at=ts,
                attributes=attrs,
            )
            return await ledger.commit_closed(moved, [event])
        if not repaired:
            moved, event = tickets.transition(
                current, TicketState.CLOSED, ts, resolution_attr, closed_at=ts, attributes=attrs
            )
            return await ledger.commit_closed(moved, [event])
        repaired_ticket, first = tickets.transition(
            current, TicketState.REPAIRED, ts, resolution_attr, attributes=attrs
        )
        verifying, second = tickets.transition(
            repaired_ticket,
            TicketState.VERIFYING,
            ts,
            {"window_s": ledger.policy.verification_window_s},
        )
        await ledger.commit(verifying, [first, second])
        self._verifier.watch(verifying, current, ts)
        return verifying

    async def shelve(
        self, ticket: Ticket, until: float | None, reason: str, by: str, ts: float
    ) -> Ticket:
        ledger = self._ledger
        current = ledger.current(ticket)
        shelving = Shelving(until, reason, by, current.key, ts)
        moved, event = tickets.annotate(
            current,
            "shelved",
            ts,
            {"until": until, "one_shot": until is None, "reason": reason, "by": by},
            attributes=tickets.with_attributes(
                current, shelved={"until": until, "reason": reason, "by": by}
            ),
        )
        await ledger.commit(moved, [event], shelve=shelving)
        ledger.shelves[current.key] = shelving
        ledger.flags_of(current.key).add(ConditionFlag.SHELVED)
        log.info("Condition `%s` shelved by `%s`: %s.", current.key, by, reason)
        return moved

    async def unshelve(self, ticket: Ticket, by: str, ts: float) -> Ticket:
        return await self._ledger.unshelve(self._ledger.current(ticket), by, ts)

    async def set_maintenance(self, asset: str, until: float, by: str) -> None:
        ledger = self._ledger
        await ledger.noise.save_maintenance(asset, until, by, ledger.clock.now())
        ledger.maintenance[asset] = until
        log.info("Asset `%s` in maintenance mode until %.0f (by `%s`).", asset, until, by)

    async def resync(self, open_tickets: list[Ticket]) -> Resync:
        """One `resync` message per open ticket, coalesced: a ticket whose previous resync
        message is still unacknowledged is not queued again (that one is resent until acked),
        so repeated requests cannot multiply messages (issue 11)."""
        ledger = self._ledger
        now = ledger.clock.now()
        queued = pending = 0
        for ticket in open_tickets:
            event = TicketEvent(ticket.id, ticket.revision, "resync", now, {"reason": "resync"})
            message = replace(ledger.encode(ticket, event), coalesce_key=f"resync:{ticket.id}")
            if await ledger.outbox.enqueue(message) is None:
                pending += 1
            else:
                queued += 1
        return Resync(republished=queued, already_queued=pending)

    def snapshot(
        self, open_tickets: list[Ticket], *, ticket: Ticket | None, asset: str | None
    ) -> dict[str, Any]:
        ledger = self._ledger
        now = ledger.clock.now()
        asset = ticket.asset if ticket is not None else asset
        if asset is None:
            raise ValueError("snapshot needs a ticket or an asset")
        profile = ledger.assets.get(asset)
        document: dict[str, Any] = {
            "asset": asset,
            "running": ledger.run_states.running(asset),
            "maintenance_until": ledger.in_maintenance(asset),
            "telemetry": ledger.window.summary(profile.tags if profile else (), now),
            "open_tickets": [
                {"id": t.id, "state": t.state.value, "priority": t.priority.value, "key": t.key}
                for t in open_tickets
                if t.asset == asset
            ][:MAX_TICKETS_IN_SNAPSHOT],
        }
        if ticket is not None:
            condition = ledger.condition(ticket.key)
            document["ticket"] = {
                "id": ticket.id,
                "state": ticket.state.value,
                "revision": ticket.revision,
                "priority": ticket.priority.value,
                "fault_code": ticket.fault_code,
                "occurrences": ticket.occurrences,
                "first_seen": ticket.first_seen,
                "last_seen": ticket.last_seen,
                "peak_value": ticket.peak_value,
                "respond_by": ticket.respond_by,
                "resolve_by": ticket.resolve_by,
                "condition": condition.state.value,
                "flags": sorted(ledger.flags.get(ticket.key, ())),
            }
        return document
