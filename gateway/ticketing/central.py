"""The ticket changes central commands make (DESIGN.md section 7).

`commands.TicketCommands` checks ids, revisions, actors and fields and replies; the methods
here apply a command that passed those checks: `ack` moves OPENED / REOPENED to ACKNOWLEDGED
and records the first response against the SLA, `assign`, `close` (CLOSED, CANCELLED, or
REPAIRED + VERIFYING when repaired), `shelve` / `unshelve`, `maintenance`, `resync` and
`snapshot` (a bounded summary, never raw samples).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from gateway.core.interfaces import TicketEvent
from gateway.core.records import Shelving, Ticket, TicketState
from gateway.ticketing import escalation, tickets
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

    async def acknowledge(
        self, ticket_id: str, central_id: str | None, ts: float, actor: str
    ) -> Ticket | None:
        """The central system received the ticket. Not a response: the response clock runs on
        until a person accepts or starts the work."""
        ledger = self._ledger
        ticket = ledger.open_ticket_by_id(ticket_id)
        if ticket is None:
            log.warning("Acknowledgement for unknown or closed ticket `%s` ignored.", ticket_id)
            return None
        acked, event = tickets.acknowledge(ticket, central_id, ts)
        if event is None:
            return ticket
        await ledger.commit(acked, [event], actor=actor)
        ledger.counters.acknowledged += 1
        log.info(
            "Ticket `%s` acknowledged by the central system as `%s`.",
            acked.id,
            acked.central_id or "-",
        )
        return acked

    async def assign(
        self, ticket: Ticket, assignee: str, team: str | None, ts: float, actor: str
    ) -> Ticket:
        current = self._ledger.current(ticket)
        attrs = tickets.with_attributes(
            current, assignment={"assignee": assignee, "team": team, "by": actor}
        )
        moved, event = tickets.transition(
            current,
            TicketState.ASSIGNED,
            ts,
            {"assignee": assignee, "team": team},
            attributes=attrs,
        )
        await self._ledger.commit(moved, [event], actor=actor)
        log.info("Ticket `%s` assigned to `%s`.", moved.id, assignee)
        return moved

    async def accept(self, ticket: Ticket, note: str | None, ts: float, actor: str) -> Ticket:
        """A person takes the work: the first response (stops the response clock)."""
        current = self._ledger.current(ticket)
        assignment = dict(current.attributes.get("assignment") or {})
        assignment |= {"assignee": assignment.get("assignee") or actor, "accepted_by": actor}
        attrs = self._responded(current, ts, actor) | {"assignment": assignment}
        state = (
            current.state if current.state is TicketState.IN_PROGRESS else (TicketState.ASSIGNED)
        )
        moved, event = tickets.annotate(
            current,
            "accepted",
            ts,
            {"from": current.state.value, "to": state.value, "note": note},
            state=state,
            attributes=attrs,
            respond_by=current.respond_by,
        )
        await self._ledger.commit(moved, [event], actor=actor)
        log.info("Ticket `%s` accepted by `%s`.", moved.id, actor)
        return moved

    async def start(self, ticket: Ticket, note: str | None, ts: float, actor: str) -> Ticket:
        """Work starts on site (IN_PROGRESS); a first response when nobody accepted before."""
        current = self._ledger.current(ticket)
        attrs = self._responded(current, ts, actor) | {
            "work": {"started_by": actor, "started_at": ts}
        }
        moved, event = tickets.transition(
            current, TicketState.IN_PROGRESS, ts, {"note": note}, attributes=attrs
        )
        await self._ledger.commit(moved, [event], actor=actor)
        return moved

    async def hold(
        self, ticket: Ticket, reason: str, note: str | None, ts: float, actor: str
    ) -> Ticket:
        """ON_HOLD for parts, access or production; the site's rule per reason decides whether
        the resolution clock stops meanwhile."""
        ledger = self._ledger
        current = ledger.current(ticket)
        pauses = bool(ledger.policy.hold_pauses.get(reason, False))
        clocks = escalation.clocks_of(current, ledger.policy)
        if pauses:
            clocks = escalation.pause(clocks, ts)
        attrs = self._responded(current, ts, actor) | {
            "hold": {
                "reason": reason,
                "note": note,
                "since": ts,
                "by": actor,
                "clock_paused": pauses,
            },
            "escalation": clocks,
        }
        moved, event = tickets.transition(
            current,
            TicketState.ON_HOLD,
            ts,
            {"reason": reason, "note": note, "clock_paused": pauses},
            attributes=attrs,
        )
        await ledger.commit(moved, [event], actor=actor)
        return moved

    async def resume(self, ticket: Ticket, note: str | None, ts: float, actor: str) -> Ticket:
        ledger = self._ledger
        current = ledger.current(ticket)
        calendar = ledger.policy.clock_of(current.priority)
        clocks = escalation.resume(escalation.clocks_of(current, ledger.policy), calendar, ts)
        hold = dict(current.attributes.get("hold") or {})
        held = [*list(current.attributes.get("holds") or []), hold | {"until": ts}]
        attrs = dict(current.attributes) | {"escalation": clocks, "holds": held[-20:]}
        attrs.pop("hold", None)
        attrs.pop("unattended", None)
        _, resolve_by = escalation.deadlines(clocks)
        moved, event = tickets.transition(
            current,
            TicketState.IN_PROGRESS,
            ts,
            {"note": note, "held_for_s": ts - float(hold.get("since", ts))},
            attributes=attrs,
            resolve_by=resolve_by,
        )
        await ledger.commit(moved, [event], actor=actor)
        return moved

    async def close(
        self,
        ticket: Ticket,
        *,
        resolution: str,
        cause: str | None,
        repaired: bool,
        ts: float,
        actor: str,
        cause_code: str | None = None,
        remedy_code: str | None = None,
        cancel_reason: str | None = None,
    ) -> Ticket:
        ledger = self._ledger
        current = ledger.current(ticket)
        resolution_attr = {
            "resolution": resolution,
            "cause": cause,
            "cause_code": cause_code,
            "remedy_code": remedy_code,
            "repaired": repaired,
            "by": actor,
        }
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
            return await ledger.commit_closed(moved, [event], actor=actor)
        attrs |= self._resolved(current, ts)
        if not repaired:
            moved, event = tickets.transition(
                current, TicketState.CLOSED, ts, resolution_attr, closed_at=ts, attributes=attrs
            )
            return await ledger.commit_closed(moved, [event], actor=actor)
        repaired_ticket, first = tickets.transition(
            current, TicketState.REPAIRED, ts, resolution_attr, attributes=attrs
        )
        verifying, second = tickets.transition(
            repaired_ticket,
            TicketState.VERIFYING,
            ts,
            {"window_s": ledger.policy.verification_window_s},
        )
        await ledger.commit(verifying, [first, second], actor=actor)
        self._verifier.watch(verifying, current, ts)
        return verifying

    async def confirm(self, ticket: Ticket, note: str | None, ts: float, actor: str) -> Ticket:
        """The requester's sign-off of a verified repair: VERIFIED -> CLOSED."""
        current = self._ledger.current(ticket)
        attrs = tickets.with_attributes(current, sign_off={"by": actor, "at": ts, "note": note})
        moved, event = tickets.transition(
            current,
            TicketState.CLOSED,
            ts,
            {"reason": "signed off", "note": note},
            closed_at=ts,
            attributes=attrs,
        )
        return await self._ledger.commit_closed(moved, [event], actor=actor)

    def _responded(self, ticket: Ticket, ts: float, actor: str) -> dict[str, Any]:
        """The ticket's attributes with its first response recorded (if it had none) and the
        response clock stopped; a person acting also ends `unattended`."""
        attrs = dict(ticket.attributes)
        attrs.pop("unattended", None)
        if "response" in attrs:
            return attrs
        clocks = escalation.stop(
            escalation.clocks_of(ticket, self._ledger.policy), escalation.RESPONSE, ts
        )
        attrs["escalation"] = clocks
        attrs["response"] = {
            "by": actor,
            "at": ts,
            "s": ts - ticket.opened_at,
            "within": bool(clocks[escalation.RESPONSE]["within"]),
        }
        return attrs

    def _resolved(self, ticket: Ticket, ts: float) -> dict[str, Any]:
        clocks = escalation.stop(
            escalation.clocks_of(ticket, self._ledger.policy), escalation.RESOLUTION, ts
        )
        return {
            "escalation": clocks,
            "resolved": {
                "at": ts,
                "s": ts - ticket.opened_at,
                "within": bool(clocks[escalation.RESOLUTION]["within"]),
            },
        }

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
        ledger.keep_shelving(shelving)
        ledger.flags_of(current.key).add(ConditionFlag.SHELVED)
        log.info("Condition `%s` shelved by `%s`: %s.", current.key, by, reason)
        return moved

    async def unshelve(self, ticket: Ticket, by: str, ts: float) -> Ticket:
        return await self._ledger.unshelve(self._ledger.current(ticket), by, ts)

    async def set_maintenance(self, asset: str, until: float, by: str) -> None:
        ledger = self._ledger
        await ledger.noise.save_maintenance(asset, until, by, ledger.clock.now())
        ledger.set_maintenance(asset, until)
        log.info("Asset `%s` in maintenance mode until %.0f (by `%s`).", asset, until, by)

    async def resync(self, open_tickets: list[Ticket]) -> Resync:
        """One `resync` message per open ticket, coalesced: a ticket whose previous resync
        message is still unacknowledged is not queued again (that one is resent until acked),
        so repeated requests cannot multiply messages."""
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
        # The tags as the ticket shows them: its own signal first.
        evidence = ledger.telemetry_evidence(ledger.profile(asset), now, signal=_signal_of(ticket))
        document: dict[str, Any] = {
            "asset": asset,
            "running": ledger.run_states.running(asset),
            "maintenance_until": ledger.in_maintenance(asset),
            "telemetry": evidence.get("telemetry", {}),
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


def _signal_of(ticket: Ticket | None) -> str | None:
    signal = ticket.evidence.get("signal") if ticket is not None else None
    return signal if isinstance(signal, str) else None
