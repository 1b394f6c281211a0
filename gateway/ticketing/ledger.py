"""The ticket service's memory and its one way to write to state.db.

Every module of the service (findings, incidents, timers, verification, central commands) reads
and changes the same few things: the open tickets by dedup key, the condition and noise flags of
each key, the shelved conditions and the assets in maintenance. They live here, together with
`commit`: it asks the encoder for the message announcing each event and writes ticket, events
and messages in one transaction. Callers update memory only after `commit` returned, so a
refused write leaves the service as it was and the same input can be applied again.

Nothing here takes the service lock: the `TicketService` methods hold it around every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.interfaces import (
    MessageEncoder,
    NoiseStateJournal,
    Outbox,
    StateRoles,
    TicketEvent,
    TicketRepository,
)
from gateway.core.records import (
    Condition,
    ConditionState,
    Finding,
    Priority,
    Shelving,
    Ticket,
    TicketState,
    dedup_key,
)
from gateway.ticketing import escalation, tickets
from gateway.ticketing.conditions import ConditionPolicy, normal
from gateway.ticketing.deadlines import DeadlineQueue
from gateway.ticketing.evidence import MAX_TAGS_IN_SNAPSHOT, TelemetryWindow, signal_first
from gateway.ticketing.ids import TicketIds
from gateway.ticketing.noise import ConditionFlag, RunStates
from gateway.ticketing.outcomes import Outcomes
from gateway.ticketing.policy import AssetProfile, LifecyclePolicy
from gateway.ticketing.statistics import Advisory, Counters
from gateway.ticketing.verification import VerificationWatch

log = logging.getLogger(__name__)

# The actor of what the gateway does on its own (open, enrich, escalate, verify, eradicate).
EDGE_ACTOR = "edge"


class Ledger:
    def __init__(
        self,
        site: str,
        gateway_id: str,
        state: StateRoles,
        encode: MessageEncoder,
        clock: Clock,
        *,
        condition_policy: ConditionPolicy,
        policy: LifecyclePolicy,
        assets: Mapping[str, AssetProfile],
    ) -> None:
        self.site = site
        # The roles of state.db the service writes: tickets (with their messages), the
        # noise state, and the outbox for messages that announce no change (`resync`).
        self.tickets: TicketRepository = state.tickets
        self.noise: NoiseStateJournal = state.noise
        self.outbox: Outbox = state.outbox
        self.clock = clock
        self.condition_policy = condition_policy
        self.policy = policy
        self.assets = dict(assets)
        self.run_states = RunStates(self.assets)
        self.window = TelemetryWindow(policy.evidence_window_s)
        self.counters = Counters()
        self.open: dict[str, Ticket] = {}  # by dedup key
        self._key_of_id: dict[str, str] = {}  # ticket id -> dedup key, see `open_ticket_by_id`
        self.conditions: dict[str, Condition] = {}
        self.last_active: dict[str, Finding] = {}  # the finding that raised each condition
        self.flags: dict[str, set[ConditionFlag]] = {}
        # The keys flagged CHATTERING, kept apart so that the journal need not scan every flag
        # of a storm's thousands of keys for each finding.
        self.chattering: set[str] = set()
        self.shelves: dict[str, Shelving] = {}
        self.maintenance: dict[str, float] = {}  # asset -> until
        self.watches: dict[str, VerificationWatch] = {}  # by ticket key
        self.outcomes = Outcomes(policy)
        # When each timer job is next due (see `deadlines`), so that a tick looks only at what
        # is due, however many are open. Kept by the writes below, which are the only ones to move
        # a due time: a condition going ACTIVE, a ticket change, a shelve, a maintenance window.
        self.delay_ends: DeadlineQueue[str] = DeadlineQueue()  # PENDING or CLEARING key
        self.stale_at: DeadlineQueue[str] = DeadlineQueue()  # condition key
        self.escalation_at: DeadlineQueue[str] = DeadlineQueue()  # open ticket's key
        self.shelve_ends: DeadlineQueue[str] = DeadlineQueue()  # shelved condition key
        self.maintenance_ends: DeadlineQueue[str] = DeadlineQueue()  # asset
        self.encode = encode
        self._ids = TicketIds(site, gateway_id)
        # Called with every ticket closed or cancelled, after the close is committed (an
        # incident's members still active are ticketed then, see `incidents`).
        self.closed_listeners: list[Callable[[Ticket], Awaitable[None]]] = []
        # Inside `burst`: the changes queued so far, with the ticket each one writes.
        self._burst: list[tuple[asyncio.Future[None], Ticket]] | None = None
        # The ids the burst's queued writes will store: taken, though state.db may not hold
        # them yet (`free_ticket_id`).
        self._burst_ids: set[str] = set()

    # --- reading ------------------------------------------------------------------------------

    def key_of(self, finding: Finding) -> str:
        return dedup_key(self.site, finding.asset, finding.fault_code, finding.detector)

    def condition(self, key: str) -> Condition:
        return self.conditions.get(key) or normal(key)

    def flags_of(self, key: str) -> set[ConditionFlag]:
        """The key's flags, as a set the caller may change."""
        return self.flags.setdefault(key, set())

    def has_flag(self, key: str, flag: ConditionFlag) -> bool:
        return flag in self.flags.get(key, ())

    def profile(self, asset: str) -> AssetProfile:
        return self.assets.get(asset) or AssetProfile(asset)

    def open_ticket_by_id(self, ticket_id: str) -> Ticket | None:
        # `open` is keyed by dedup key and changed in many places; the key of an id is
        # remembered and checked against `open` on every use, and all of them found again when
        # it is missing or stale (a new ticket, a closed one), so the answer is always `open`'s.
        key = self._key_of_id.get(ticket_id)
        ticket = self.open.get(key) if key is not None else None
        if ticket is not None and ticket.id == ticket_id:
            return ticket
        self._key_of_id = {t.id: k for k, t in self.open.items()}
        key = self._key_of_id.get(ticket_id)
        return self.open[key] if key is not None else None

    def current(self, ticket: Ticket) -> Ticket:
        """The newest in-memory version of an open ticket (a command may hold an older copy)."""
        current = self.open.get(ticket.key)
        return current if current is not None and current.id == ticket.id else ticket

    def in_maintenance(self, asset: str) -> float | None:
        until = self.maintenance.get(asset)
        return until if until is not None and self.clock.now() < until else None

    def condition_active(self, key: str) -> bool:
        return self.condition(key).state in (ConditionState.ACTIVE, ConditionState.CLEARING)

    def telemetry_evidence(
        self, profile: AssetProfile, now: float, *, signal: str | None = None
    ) -> dict[str, Any]:
        """The asset's related tags summarised over the evidence window, `signal` (the tag
        the finding was read from) first: a ticket shows at most `MAX_TAGS_IN_SNAPSHOT`
        tags, and on an asset with more, the one that tripped must not be left out. An asset
        with more related tags than that says how many (`telemetry_related_tags`), so that
        the planner knows the list is cut."""
        summary = self.window.summary(signal_first(profile.tags, signal), now)
        if not summary:
            return {}
        if len(profile.tags) > MAX_TAGS_IN_SNAPSHOT:
            return {"telemetry": summary, "telemetry_related_tags": len(profile.tags)}
        return {"telemetry": summary}

    # --- writing ------------------------------------------------------------------------------

    async def commit(
        self,
        ticket: Ticket,
        events: Iterable[TicketEvent],
        *,
        shelve: Shelving | None = None,
        unshelve: str | None = None,
        actor: str = EDGE_ACTOR,
    ) -> None:
        """Write the ticket, its events and their messages, then keep the ticket as the open
        one of its key. Raises `StoreError` when state.db refuses; memory is unchanged then.

        Every event names its actor (`detail.actor`): the person or system whose command made
        it, or `edge` for what the gateway decided itself."""
        ticket, events = self._sla_follows_priority(ticket, events)
        events = [_with_actor(event, actor) for event in events]
        # Each message shows the ticket as of its own event (REPAIRED, then VERIFYING...).
        messages = [self.encode(_as_of(ticket, event), event) for event in events]
        if self._burst is not None:
            # Queued, not awaited: the burst waits for all its changes once (see `burst`).
            # Tasks start in creation order, so the changes reach the group commit in order.
            write = self.tickets.commit_ticket_change(
                ticket, events, messages, shelve=shelve, unshelve=unshelve
            )
            self._burst.append((asyncio.ensure_future(write), ticket))
            self._burst_ids.add(ticket.id)
            self._keep(ticket)
            return
        try:
            await self.tickets.commit_ticket_change(
                ticket, events, messages, shelve=shelve, unshelve=unshelve
            )
        except StoreError as exc:
            self.counters.commit_failures += 1
            log.error(
                "Ticket `%s` revision %d not committed, nothing changed: %s",
                ticket.id,
                ticket.revision,
                exc,
            )
            raise
        self._keep(ticket)

    def _keep(self, ticket: Ticket) -> None:
        """Memory after a committed change: the open ticket of its key, its next escalation
        step, the outcomes."""
        if ticket.state.is_open:
            self.keep_open(ticket)
        else:
            self.escalation_at.cancel(ticket.key)
        self.outcomes.observe(ticket)

    def keep_open(self, ticket: Ticket) -> None:
        """The open ticket of its key, as committed or loaded, and when its clocks next
        step (`escalation.next_due`: the ticket alone decides it)."""
        self.open[ticket.key] = ticket
        self.escalation_at.schedule(ticket.key, escalation.next_due(ticket, self.policy))

    def set_condition(self, condition: Condition) -> None:
        """The key's condition from now on. A PENDING (CLEARING) one is due to become ACTIVE
        (NORMAL) when its on-delay (off-delay) runs out; an ACTIVE one not yet flagged STALE
        is due to be marked stale `stale_after_s` after it became active."""
        key = condition.key
        self.conditions[key] = condition
        delays = self.condition_policy
        if condition.state is ConditionState.PENDING:
            self.delay_ends.schedule(key, condition.since + delays.on_delay_s)
        elif condition.state is ConditionState.CLEARING:
            self.delay_ends.schedule(key, condition.since + delays.off_delay_s)
        else:
            self.delay_ends.cancel(key)
        if condition.state is ConditionState.ACTIVE and not self.has_flag(key, ConditionFlag.STALE):
            self.stale_at.schedule(key, condition.since + self.policy.stale_after_s)
        else:
            self.stale_at.cancel(key)

    def keep_shelving(self, shelving: Shelving) -> None:
        """A shelve in force; a timed one is due to end at its `until`."""
        self.shelves[shelving.key] = shelving
        self.shelve_ends.schedule(shelving.key, shelving.until)

    def set_maintenance(self, asset: str, until: float) -> None:
        self.maintenance[asset] = until
        self.maintenance_ends.schedule(asset, until)

    def _sla_follows_priority(
        self, ticket: Ticket, events: Iterable[TicketEvent]
    ) -> tuple[Ticket, list[TicketEvent]]:
        """A change that raised the ticket's priority (a more urgent finding, an incident
        escalated to P0, whatever the path) also moves its SLA clocks to the new priority's
        targets (`escalation.retarget`), in the same commit: the message already carries the
        new respond_by and resolve_by, and the events that raised it name them. The priority
        never falls, so a less urgent one leaves the clocks as they are."""
        events = list(events)
        if not ticket.state.is_open:
            return ticket, events
        clocks = escalation.clocks_of(ticket, self.policy)
        running_for = Priority(clocks.get("priority", ticket.priority.value))
        if Priority.most_urgent(running_for, ticket.priority) is running_for:
            return ticket, events
        clocks = escalation.retarget(clocks, self.policy, ticket.priority, self.clock.now())
        respond_by, resolve_by = escalation.deadlines(clocks)
        sla = self.policy.sla_for(ticket.priority)
        attrs = dict(ticket.attributes) | {
            "escalation": clocks,
            "sla": {"respond_s": sla.respond_s, "resolve_s": sla.resolve_s},
        }
        ticket = replace(ticket, respond_by=respond_by, resolve_by=resolve_by, attributes=attrs)
        deadlines = {"respond_by": respond_by, "resolve_by": resolve_by}
        events = [
            replace(e, detail={**e.detail, **deadlines}) if "previous_priority" in e.detail else e
            for e in events
        ]
        log.info(
            "Ticket `%s` raised from %s to %s: respond by %.0f, resolve by %.0f (%s's targets"
            " from the clock's start).",
            ticket.id,
            running_for,
            ticket.priority,
            respond_by,
            resolve_by,
            ticket.priority,
        )
        return ticket, events

    @contextlib.asynccontextmanager
    async def burst(self) -> AsyncIterator[None]:
        """Changes made inside are committed together (state.db's group commit: one
        transaction, each change with its own revision, events and messages) and waited for
        once, at the end, before this returns: nothing of the burst is reported done, and no
        message of it published, before it is durable.

        The service lock is held throughout, so nobody sees memory ahead of the disk. Should
        state.db refuse a change of the burst, memory has moved on already: the tickets of the
        refused changes are read back from state.db as a restart would (`_forget_refused`)
        and the first `StoreError` is raised.
        """
        if self._burst is not None:  # nested: the outer burst waits
            yield
            return
        self._burst = []
        try:
            yield
        finally:
            pending, self._burst = self._burst, None
            outcomes = await asyncio.gather(*(task for task, _ in pending), return_exceptions=True)
            self._burst_ids = set()
            refused = [
                (ticket, outcome)
                for (_, ticket), outcome in zip(pending, outcomes, strict=True)
                if isinstance(outcome, BaseException)
            ]
            if refused:
                await self._refused_in_burst(refused)

    async def _refused_in_burst(self, refused: Sequence[tuple[Ticket, BaseException]]) -> None:
        self.counters.commit_failures += len(refused)
        await self._forget_refused([ticket for ticket, _ in refused])
        first, error = refused[0]
        log.error(
            "%d ticket change(s) of a burst not committed (first: `%s` revision %d): %s",
            len(refused),
            first.id,
            first.revision,
            error,
        )
        raise error

    async def _forget_refused(self, refused: Sequence[Ticket]) -> None:
        """Memory of the keys whose change state.db refused, back to what it holds: the ticket
        as stored (or none), its condition ACTIVE when the stored ticket says so, else NORMAL,
        as after a restart (`FindingRouter.resume_conditions`)."""
        for key in dict.fromkeys(ticket.key for ticket in refused):
            self.open.pop(key, None)
            self.escalation_at.cancel(key)
            self.conditions.pop(key, None)
            self.delay_ends.cancel(key)
            self.stale_at.cancel(key)
            self.watches.pop(key, None)
        for ticket in await self.tickets.load_open_tickets():
            if ticket.key not in {t.key for t in refused}:
                continue
            self.keep_open(ticket)
            if ticket.condition_active:
                self.set_condition(Condition(ticket.key, ConditionState.ACTIVE, ticket.last_seen))

    async def commit_closed(
        self, ticket: Ticket, events: Iterable[TicketEvent], *, actor: str = "edge"
    ) -> Ticket:
        # Closing ends a shelve too (a new ticket for the key starts unshelved).
        await self.commit(ticket, events, unshelve=ticket.key, actor=actor)
        self.open.pop(ticket.key, None)
        self.escalation_at.cancel(ticket.key)
        self.watches.pop(ticket.key, None)
        self.shelves.pop(ticket.key, None)
        self.shelve_ends.cancel(ticket.key)
        self.flags.get(ticket.key, set()).discard(ConditionFlag.SHELVED)
        log.info("Ticket `%s` %s.", ticket.id, ticket.state.value.lower())
        for listener in self.closed_listeners:
            await listener(ticket)
        return ticket

    async def unshelve(self, ticket: Ticket, by: str, ts: float) -> Ticket:
        moved, event = tickets.annotate(
            ticket,
            "unshelved",
            ts,
            {"by": by},
            attributes=tickets.with_attributes(ticket, shelved=None),
        )
        await self.commit(moved, [event], unshelve=ticket.key)
        self.shelves.pop(ticket.key, None)
        self.shelve_ends.cancel(ticket.key)
        self.flags.get(ticket.key, set()).discard(ConditionFlag.SHELVED)
        log.info("Condition `%s` unshelved (%s).", ticket.key, by)
        return moved

    def advise_on_quality(self, ticket: Ticket, model: str) -> None:
        """The same fault on one asset model `quality_repeats` times within the window: a
        quality advisory (design or supplier), once per model and fault code as it is reached."""
        if not model:
            return
        now = self.clock.now()
        same = self.outcomes.same_fault_on_model(model, ticket.fault_code, now)
        if len(same) != self.policy.quality_repeats:
            return
        assets = sorted({t.asset for t in same})
        message = (
            f"`{ticket.fault_code}` on model `{model}` {len(same)} times within "
            f"{self.policy.quality_window_s / 86400:.0f} days ({', '.join(assets)}): "
            "a quality matter for the model, not only a repair"
        )
        self.counters.advise(Advisory(f"{model}/{ticket.fault_code}", "quality", now, message))
        log.warning("Quality advisory: %s.", message)

    async def forget_shelving(self, key: str) -> None:
        """End the shelve of a key that has no open ticket to announce it on."""
        await self.noise.clear_shelving(key)
        self.shelves.pop(key, None)
        self.shelve_ends.cancel(key)
        self.flags.get(key, set()).discard(ConditionFlag.SHELVED)

    async def free_ticket_id(self, opened_at: float) -> str:
        """The next id not used by any ticket, open or closed (see `ids`): not in state.db
        and not written by the running burst. Every other ticket in memory is in state.db
        already, so no walk of the open tickets (it made opening the n-th ticket of a storm
        cost O(n))."""
        while True:
            candidate = self._ids.next_candidate(opened_at)
            if candidate in self._burst_ids:
                continue
            if await self.tickets.get_ticket(candidate) is None:
                return candidate


def _with_actor(event: TicketEvent, actor: str) -> TicketEvent:
    if "actor" in event.detail:
        return event
    return replace(event, detail={**event.detail, "actor": actor})


def _as_of(ticket: Ticket, event: TicketEvent) -> Ticket:
    state = ticket.state
    if event.kind.upper() in TicketState.__members__:
        state = TicketState(event.kind.upper())
    if state is ticket.state and event.revision == ticket.revision:
        return ticket
    return replace(ticket, state=state, revision=event.revision)
