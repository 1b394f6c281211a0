"""The ticket service: findings, samples, time and central commands in; committed ticket changes
and their messages out (DESIGN.md section 6).

One condition per dedup key (site + asset + fault code + detector) and at most one open ticket
per key. This class is the public face and the lock; the work is done by one module per job:

    findings      condition steps and the noise control that gates them (raise, clear, chatter)
    opening       opening, reopening (recurrence) and enriching tickets
    incidents     storms: one incident per group key (groups) or per area flood (storms),
                  members, root cause by topology, what happens when one closes
    verifier      verification after repair against the pre-fault baseline
    timers        on/off-delays, shelve and maintenance expiry, stale, escalation, eradication
    escalation    SLA clocks and the escalation policy with an end (pure)
    central       the changes central commands make (`commands` checks and replies)
    statistics    counters, `statistics()` and the KPIs
    outcomes      eradication, repeat reports and the maintenance KPIs, from the tickets
    journal       flood, storm and chattering state kept in state.db across restarts
    ledger        the shared memory and the one way to write a ticket change

Changes are serialised by a lock: findings, samples, timers and central commands arrive from
different tasks. Each change is committed (ticket, events, messages in one transaction) before
memory is updated, so a refused write leaves the service as it was.

What survives a restart: open tickets, and what `start()` restores from state.db: shelving,
maintenance mode (OUT_OF_SERVICE follows from it), an area's flood in progress with its
incident and members, and CHATTERING flags with the raises that made them. Conditions start
NORMAL; a detector that still sees a fault raises it again, which counts as one more occurrence
on the open ticket. A shelve or a maintenance window that ran out while the gateway was down
ends at start; a flood or chatter that calmed down ends at the first timer tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from gateway.core.clock import Clock
from gateway.core.interfaces import MessageEncoder, ResumedCondition, StateRoles
from gateway.core.records import Condition, ConditionState, FaultCode, Finding, Sample, Ticket
from gateway.ticketing.central import CentralActions, Resync
from gateway.ticketing.conditions import ConditionPolicy
from gateway.ticketing.findings import FindingRouter
from gateway.ticketing.incidents import Incidents
from gateway.ticketing.journal import NoiseJournal
from gateway.ticketing.knowledge import KnowledgeBase
from gateway.ticketing.ledger import Ledger
from gateway.ticketing.noise import ConditionFlag
from gateway.ticketing.opening import TicketOpener
from gateway.ticketing.policy import AssetProfile, LifecyclePolicy
from gateway.ticketing.statistics import TicketServiceStatistics, kpis, statistics
from gateway.ticketing.timers import Timers
from gateway.ticketing.topology import Dependencies, Link
from gateway.ticketing.verifier import RepairVerifier

log = logging.getLogger(__name__)

__all__ = ["TicketService", "TicketServiceStatistics"]


class TicketService:
    def __init__(
        self,
        site: str,
        gateway_id: str,
        state: StateRoles,
        encode: MessageEncoder,
        clock: Clock,
        *,
        policy: LifecyclePolicy,
        condition_policy: ConditionPolicy | None = None,
        assets: Mapping[str, AssetProfile] | None = None,
        links: Sequence[Link] = (),
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.policy = policy
        profiles = dict(assets or {})
        for link in links:
            # A link is an asset of its own for routing and the knowledge base (class = kind).
            area = next((profiles[a].area for a in sorted(link.assets) if a in profiles), "")
            profiles.setdefault(link.id, AssetProfile(link.id, link.kind, area=area))
        self._ledger = Ledger(
            site,
            gateway_id,
            state,
            encode,
            clock,
            condition_policy=condition_policy or ConditionPolicy(),
            policy=self.policy,
            assets=profiles,
        )
        opener = TicketOpener(self._ledger, knowledge or KnowledgeBase())
        self._verifier = RepairVerifier(self._ledger)
        dependencies = Dependencies({a: p.depends_on for a, p in profiles.items()}, links)
        self._incidents = Incidents(self._ledger, opener, dependencies)
        self._router = FindingRouter(self._ledger, opener, self._incidents, self._verifier, links)
        self._timers = Timers(self._ledger, self._router, self._incidents)
        self._central = CentralActions(self._ledger, self._verifier)
        self._journal = NoiseJournal(
            self._ledger,
            self._incidents.storms,
            self._router.chatter,
            self._incidents.groups,
            self._incidents.folds,
        )
        self._clock = clock
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None  # the task inside `together`
        self._started = False

    async def start(self) -> None:
        """Load the open tickets, so that a trigger after a restart enriches instead of opening,
        and restore shelving, maintenance mode, floods and chattering (see the module doc)."""
        ledger = self._ledger
        now = self._clock.now()
        loaded = await ledger.tickets.load_open_tickets()
        recent = await ledger.tickets.tickets_since(now - ledger.outcomes.horizon_s)
        shelvings = await ledger.noise.load_shelvings(now)
        windows = await ledger.noise.load_maintenance(now)
        async with self._lock:
            for ticket in loaded:
                ledger.keep_open(ticket)
            ledger.outcomes.load(recent)
            self._router.resume_conditions(loaded)
            for stored in shelvings:
                ledger.keep_shelving(stored)
                ledger.flags_of(stored.key).add(ConditionFlag.SHELVED)
            for window in windows:
                ledger.set_maintenance(window.asset, window.until)
            # A ticket still marked shelved whose shelve ran out while the gateway was down (or
            # was never saved, before schema version 3): announce the end it missed.
            for ticket in list(ledger.open.values()):
                if "shelved" in ticket.attributes and ticket.key not in ledger.shelves:
                    await ledger.unshelve(ticket, "timer", now)
            restored = await self._journal.restore(now)
            self._incidents.reindex()
            self._router.resume_storm_conditions(self._incidents.resumable())
            self._started = True
        log.info(
            "Ticket service started with %d open tickets, %d shelved conditions, %d assets"
            " in maintenance mode, %d floods, %d storm incidents and %d chattering conditions.",
            len(loaded),
            len(ledger.shelves),
            len(ledger.maintenance),
            restored.floods,
            restored.storms,
            restored.chattering,
        )

    # --- reading ------------------------------------------------------------------------------

    def conditions_to_resume(self) -> list[ResumedCondition]:
        """The conditions state.db holds active (their ticket says so): the detectors that
        raised them are told before their first record (`ResumableDetector`), so that a value
        that came back to normal while the gateway was down clears them on fresh data."""
        tickets = [
            ResumedCondition(t.asset, t.detector, FaultCode(t.fault_code))
            for t in self._ledger.open.values()
            if t.condition_active
        ]
        storms = [
            ResumedCondition(f.asset, f.detector, FaultCode(f.fault_code))
            for f in self._incidents.resumable()
        ]
        return tickets + storms

    def key_of(self, finding: Finding) -> str:
        return self._ledger.key_of(finding)

    def open_tickets(self) -> list[Ticket]:
        """The open tickets as this service knows them (for `resync` and `status`)."""
        return sorted(self._ledger.open.values(), key=lambda t: (t.opened_at, t.id))

    def ticket_for(self, key: str) -> Ticket | None:
        return self._ledger.open.get(key)

    def open_ticket_by_id(self, ticket_id: str) -> Ticket | None:
        return self._ledger.open_ticket_by_id(ticket_id)

    async def find_ticket(self, ticket_id: str) -> Ticket | None:
        """An open ticket from memory, or any ticket (closed ones too) from the store."""
        return self.open_ticket_by_id(ticket_id) or await self._ledger.tickets.get_ticket(ticket_id)

    def condition(self, key: str) -> Condition:
        return self._ledger.condition(key)

    def active_conditions(self) -> list[Condition]:
        """Every condition not NORMAL (pending, active, clearing), oldest first."""
        return sorted(
            (c for c in self._ledger.conditions.values() if c.state is not ConditionState.NORMAL),
            key=lambda c: (c.since, c.key),
        )

    def flags(self, key: str) -> frozenset[ConditionFlag]:
        return frozenset(self._ledger.flags.get(key, ()))

    def knows_asset(self, asset: str) -> bool:
        ledger = self._ledger
        return asset in ledger.assets or any(t.asset == asset for t in ledger.open.values())

    def in_maintenance(self, asset: str) -> float | None:
        return self._ledger.in_maintenance(asset)

    def advisories(self) -> list[dict[str, Any]]:
        return [a.as_dict() for a in self._ledger.counters.advisories]

    def statistics(self) -> TicketServiceStatistics:
        ledger = self._ledger
        return statistics(
            ledger.counters,
            open_tickets=len(ledger.open),
            active_conditions=sum(
                1 for c in ledger.conditions.values() if c.state is not ConditionState.NORMAL
            ),
            flags=ledger.flags,
        )

    def kpis(self) -> dict[str, Any]:
        """Alarm-management KPIs for the health topic and `edge-gateway status`."""
        ledger = self._ledger
        return kpis(
            ledger.counters,
            now=self._clock.now(),
            open_tickets=ledger.open,
            flags=ledger.flags,
            shelves=ledger.shelves,
            storms=self._incidents.storms,
            outcomes=ledger.outcomes.kpis(self._clock.now(), ledger.open),
        )

    # --- inputs -------------------------------------------------------------------------------

    async def on_finding(self, finding: Finding) -> None:
        """Apply one finding. Raises `StoreError` when state.db refuses; nothing changed then."""
        self._require_started()
        async with self._lock:
            await self._router.on_finding(finding)
            await self._journal.save(urgent_only=True)

    async def on_findings(self, findings: Sequence[Finding]) -> None:
        """Apply findings that arrived together (one batch of records), in order, as one
        burst: their ticket changes are committed together by state.db's group commit, each
        with its own revision, events and messages, and this returns once all are durable
        (one COMMIT for the lot). Raises `StoreError` when state.db refused one; the tickets of the
        refused changes are then as state.db holds them (`Ledger.burst`)."""
        self._require_started()
        async with self._lock:
            async with self._ledger.burst():
                for finding in findings:
                    await self._router.on_finding(finding)
            await self._journal.save(urgent_only=True)

    async def observe_samples(self, samples: Sequence[Sample]) -> None:
        """Samples as the telemetry store gets them: run states, link health, evidence windows
        and the running time of verifications."""
        self._require_started()
        async with self._lock:
            self._ledger.window.add(samples)
            for asset, running in self._ledger.run_states.observe(samples):
                log.info("Asset `%s` is %s.", asset, "running" if running else "stopped")
            await self._router.observe_links(samples)
            await self._verifier.observe(samples)
            await self._journal.save(urgent_only=True)

    async def advance_timers(self) -> None:
        """Let time pass (see `timers`); also saves what changed of floods and chattering.
        The app calls it periodically."""
        self._require_started()
        async with self._lock:
            now = self._clock.now()
            await self._timers.advance(now)
            await self._journal.save(urgent_only=False)

    async def run_timers(self, period_s: float = 1.0) -> None:
        """Run `advance_timers` every `period_s` until cancelled (the app's `ticketing` task)."""
        while True:
            await asyncio.sleep(period_s)
            await self.advance_timers()

    # --- central commands (`commands.TicketCommands` checks ids, revisions and actors) --------

    @contextlib.asynccontextmanager
    async def together(self) -> AsyncIterator[None]:
        """Hold the service for several commands handled together (a batch of acks): the
        changes `acknowledge` makes inside are committed together and waited for once, when
        the block ends (`Ledger.burst`). Only `acknowledge` may be called inside."""
        self._require_started()
        async with self._lock:
            self._holder = asyncio.current_task()
            try:
                async with self._ledger.burst():
                    yield
            finally:
                self._holder = None

    async def acknowledge(
        self, ticket_id: str, central_id: str | None, ts: float, actor: str = "central"
    ) -> Ticket | None:
        """The central `ack` command. Returns the ticket after the command, or None when no open
        ticket has that id. Acknowledging twice changes nothing the second time."""
        self._require_started()
        if self._holder is not None and self._holder is asyncio.current_task():
            return await self._central.acknowledge(ticket_id, central_id, ts, actor)
        async with self._lock:
            return await self._central.acknowledge(ticket_id, central_id, ts, actor)

    async def assign(
        self, ticket: Ticket, assignee: str, team: str | None, ts: float, actor: str = "central"
    ) -> Ticket:
        async with self._lock:
            return await self._central.assign(ticket, assignee, team, ts, actor)

    async def accept(self, ticket: Ticket, note: str | None, ts: float, actor: str) -> Ticket:
        """A person accepts the work: the first response."""
        async with self._lock:
            return await self._central.accept(ticket, note, ts, actor)

    async def start_work(self, ticket: Ticket, note: str | None, ts: float, actor: str) -> Ticket:
        async with self._lock:
            return await self._central.start(ticket, note, ts, actor)

    async def hold(
        self, ticket: Ticket, reason: str, note: str | None, ts: float, actor: str
    ) -> Ticket:
        async with self._lock:
            return await self._central.hold(ticket, reason, note, ts, actor)

    async def resume(self, ticket: Ticket, note: str | None, ts: float, actor: str) -> Ticket:
        async with self._lock:
            return await self._central.resume(ticket, note, ts, actor)

    async def confirm(self, ticket: Ticket, note: str | None, ts: float, actor: str) -> Ticket:
        async with self._lock:
            return await self._central.confirm(ticket, note, ts, actor)

    async def close(
        self,
        ticket: Ticket,
        *,
        resolution: str,
        cause: str | None,
        repaired: bool,
        ts: float,
        actor: str = "central",
        cause_code: str | None = None,
        remedy_code: str | None = None,
        cancel_reason: str | None = None,
    ) -> Ticket:
        """The central `close`. A repair starts verification (REPAIRED, VERIFYING); otherwise the
        ticket is CLOSED, or CANCELLED when a cancel reason is given."""
        async with self._lock:
            return await self._central.close(
                ticket,
                resolution=resolution,
                cause=cause,
                repaired=repaired,
                ts=ts,
                actor=actor,
                cause_code=cause_code,
                remedy_code=remedy_code,
                cancel_reason=cancel_reason,
            )

    async def shelve(
        self, ticket: Ticket, until: float | None, reason: str, by: str, ts: float
    ) -> Ticket:
        """Shelve the ticket's condition: timed (at most `max_shelve_s`) or one-shot (None)."""
        async with self._lock:
            return await self._central.shelve(ticket, until, reason, by, ts)

    async def unshelve(self, ticket: Ticket, by: str, ts: float) -> Ticket:
        async with self._lock:
            return await self._central.unshelve(ticket, by, ts)

    async def set_maintenance(self, asset: str, until: float, by: str) -> None:
        """Maintenance mode: the asset's findings open nothing until `until` (OUT_OF_SERVICE).
        Saved in state.db first, so it still holds after a restart."""
        self._require_started()
        async with self._lock:
            await self._central.set_maintenance(asset, until, by)

    async def resync(self) -> Resync:
        """Republish every open ticket as it stands (event `resync`, current revision),
        coalesced with resync messages still waiting for their ack."""
        self._require_started()
        async with self._lock:
            return await self._central.resync(self.open_tickets())

    def snapshot(self, *, ticket: Ticket | None = None, asset: str | None = None) -> dict[str, Any]:
        """A bounded summary for `cmd/snapshot`: ticket facts, condition flags and per-tag
        min/mean/max/last; never raw samples."""
        return self._central.snapshot(self.open_tickets(), ticket=ticket, asset=asset)

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("TicketService.start() must complete before findings arrive")
