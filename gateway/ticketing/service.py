"""The ticket service: findings in, committed ticket changes and their messages out.

One condition per dedup key (site + asset + fault code + detector) and at most one open ticket
per key (DESIGN.md section 6, issues 2 and 5):

- the first time a condition becomes ACTIVE, a ticket opens (event `opened`) with its SLA
  deadlines, routing, failure coding, knowledge-base actions and a telemetry summary; a key
  closed within 72 h is reopened instead, within 30 days the new ticket names `recurrence_of`;
- when it becomes ACTIVE again while its ticket is open, the ticket is enriched instead
  (event `updated`, reason `retriggered`); a more urgent finding escalates (reason `escalated`);
- when the condition clears, `condition_cleared` is reported and the ticket stays open: only
  the central system closes tickets;
- noise control gates what is reported: shelving, suppression (asset stopped, upstream link
  lost), maintenance (out of service), chattering (clears withheld, a tuning advisory), stale;
- an alarm flood in an area folds new conditions into one incident (see `storms`);
- central commands move the ticket through ACKNOWLEDGED, ASSIGNED, REPAIRED, VERIFYING,
  VERIFIED / REOPENED, CLOSED or CANCELLED; a repair is verified against the pre-fault baseline.

Each change asks the encoder for the message that announces it and commits ticket, events and
messages in one transaction. Memory is updated only after the commit succeeded, so a refused
write leaves the service as before and the same input can be applied again.

Conditions and most noise flags are not persisted. After a restart every condition starts
NORMAL and open tickets are loaded from the store; a detector that still sees the fault raises
it again, which counts as one more occurrence on the open ticket. The operator's decisions are
persisted and restored by `start()`: shelving (saved with the `shelved` event, forgotten with
the `unshelved` one) and maintenance mode per asset, from which OUT_OF_SERVICE follows; a shelve
or a maintenance window that ran out while the gateway was down is dropped at load. Changes are
serialised by a lock: findings, samples, timers and central commands arrive from different tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from gateway.core.clock import Clock
from gateway.core.errors import StoreError
from gateway.core.interfaces import MessageEncoder, NewMessage, TicketEvent, TicketRepository
from gateway.core.records import (
    ISO14224_FAILURE_MODE,
    Condition,
    ConditionState,
    FaultCode,
    Finding,
    Priority,
    Sample,
    Ticket,
    TicketState,
    dedup_key,
)
from gateway.ticketing import tickets
from gateway.ticketing.conditions import (
    ConditionPolicy,
    ConditionStep,
    Trigger,
    advance,
    normal,
    observe,
)
from gateway.ticketing.evidence import TelemetryWindow
from gateway.ticketing.ids import TicketIds
from gateway.ticketing.knowledge import KnowledgeBase
from gateway.ticketing.noise import ChatterTracker, ConditionFlag, RunStates, Shelving
from gateway.ticketing.policy import AssetProfile, LifecyclePolicy
from gateway.ticketing.storms import AreaFlood, Arrival, FloodTracker
from gateway.ticketing.topology import Link, LinkChange, LinkWatcher
from gateway.ticketing.verification import VerificationWatch

log = logging.getLogger(__name__)

FLOOD_DETECTOR = "isa18.2-flood"
TOPOLOGY_DETECTOR = "topology"
MAX_ADVISORIES = 50


class StoredShelving(Protocol):
    """A shelved condition as state.db returns it."""

    @property
    def key(self) -> str: ...

    @property
    def until(self) -> float | None: ...

    @property
    def reason(self) -> str: ...

    @property
    def by(self) -> str: ...

    @property
    def set_at(self) -> float: ...


class StoredMaintenance(Protocol):
    """An asset's maintenance window as state.db returns it."""

    @property
    def asset(self) -> str: ...

    @property
    def until(self) -> float: ...

    @property
    def by(self) -> str: ...


class LifecycleRepository(TicketRepository, Protocol):
    """What the lifecycle needs of state.db beyond `TicketRepository` (StateStore has it)."""

    async def commit_ticket_change(
        self,
        ticket: Ticket,
        events: Sequence[TicketEvent],
        messages: Sequence[NewMessage],
        *,
        shelve: Shelving | None = None,
        unshelve: str | None = None,
    ) -> None: ...

    async def last_closed_ticket(self, key: str) -> Ticket | None: ...

    async def enqueue(self, message: NewMessage) -> int: ...

    # Issue 5: shelving and maintenance mode survive a restart.
    async def clear_shelving(self, key: str) -> None: ...

    async def load_shelvings(self, now: float) -> Sequence[StoredShelving]: ...

    async def save_maintenance(self, asset: str, until: float, by: str, set_at: float) -> None: ...

    async def clear_maintenance(self, asset: str) -> None: ...

    async def load_maintenance(self, now: float) -> Sequence[StoredMaintenance]: ...


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
    suppressed: int = 0  # active findings that opened nothing (stopped, upstream, maintenance)
    shelved_hits: int = 0
    chattering: int = 0
    recurrences: int = 0  # new tickets with `recurrence_of` plus reopened ones
    reopened: int = 0
    renotified: int = 0
    incidents: int = 0
    flood_members: int = 0
    verified_pass: int = 0
    verified_fail: int = 0


@dataclass(frozen=True, slots=True)
class Advisory:
    """A tuning advisory for the health topic (chattering: widen the deadband or delays)."""

    key: str
    kind: str
    ts: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "ts": self.ts, "message": self.message}


class TicketService:
    def __init__(
        self,
        site: str,
        gateway_id: str,
        repo: LifecycleRepository,
        encode: MessageEncoder,
        clock: Clock,
        *,
        condition_policy: ConditionPolicy | None = None,
        policy: LifecyclePolicy | None = None,
        assets: Mapping[str, AssetProfile] | None = None,
        links: Sequence[Link] = (),
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self._site = site
        self._repo = repo
        self._encode = encode
        self._clock = clock
        self._policy = condition_policy or ConditionPolicy()
        self.policy = policy or LifecyclePolicy()
        self._assets = dict(assets or {})
        self._knowledge = knowledge or KnowledgeBase()
        self._links = LinkWatcher(links)
        for link in links:
            # A link is an asset of its own for routing and the knowledge base (class = kind).
            area = next(
                (self._assets[a].area for a in sorted(link.assets) if a in self._assets), ""
            )
            self._assets.setdefault(link.id, AssetProfile(link.id, link.kind, area=area))
        self._run_states = RunStates(self._assets)
        self._window = TelemetryWindow(self.policy.evidence_window_s)
        self._chatter = ChatterTracker(self.policy.chatter_cycles, self.policy.chatter_window_s)
        self._storms = FloodTracker(
            self.policy.flood_threshold,
            self.policy.flood_window_s,
            self.policy.flood_end_below,
            self.policy.flood_p0_per_hour,
        )
        self._ids = TicketIds(site, gateway_id)
        self._lock = asyncio.Lock()
        self._started = False
        self._conditions: dict[str, Condition] = {}
        self._open: dict[str, Ticket] = {}  # by dedup key
        self._last_active: dict[str, Finding] = {}
        self._flags: dict[str, set[ConditionFlag]] = {}
        self._shelves: dict[str, Shelving] = {}
        self._maintenance: dict[str, float] = {}  # asset -> until
        self._member_of: dict[str, str] = {}  # member key -> incident key, while the flood lasts
        self._watches: dict[str, VerificationWatch] = {}  # by ticket key
        self._advisories: list[Advisory] = []
        self._first_responses: list[tuple[float, bool]] = []  # (seconds, within SLA)
        self._findings = 0
        self._opened = 0
        self._enriched = 0
        self._escalated = 0
        self._cleared = 0
        self._acknowledged = 0
        self._commit_failures = 0
        self._suppressed = 0
        self._shelved_hits = 0
        self._recurrences = 0
        self._reopened = 0
        self._renotified = 0
        self._incidents = 0
        self._flood_members = 0
        self._verified_pass = 0
        self._verified_fail = 0

    async def start(self) -> None:
        """Load the open tickets, so that a trigger after a restart enriches instead of opening,
        and restore shelving and maintenance mode, so that they still hold after a restart."""
        now = self._clock.now()
        loaded = await self._repo.load_open_tickets()
        shelvings = await self._repo.load_shelvings(now)
        windows = await self._repo.load_maintenance(now)
        async with self._lock:
            self._open = {t.key: t for t in loaded}
            for stored in shelvings:
                self._shelves[stored.key] = Shelving(
                    stored.until, stored.reason, stored.by, stored.key, stored.set_at
                )
                self._flags.setdefault(stored.key, set()).add(ConditionFlag.SHELVED)
            self._maintenance = {w.asset: w.until for w in windows}
            # A ticket still marked shelved whose shelve ran out while the gateway was down (or
            # was never saved, before schema version 3): announce the end it missed.
            for ticket in list(self._open.values()):
                if "shelved" in ticket.attributes and ticket.key not in self._shelves:
                    await self._unshelve(ticket, "timer", now)
            self._started = True
        log.info(
            "Ticket service started with %d open tickets, %d shelved conditions and %d assets"
            " in maintenance mode.",
            len(loaded),
            len(self._shelves),
            len(self._maintenance),
        )

    # --- reading ------------------------------------------------------------------------------

    def key_of(self, finding: Finding) -> str:
        return dedup_key(self._site, finding.asset, finding.fault_code, finding.detector)

    def open_tickets(self) -> list[Ticket]:
        """The open tickets as this service knows them (for `resync` and `status`)."""
        return sorted(self._open.values(), key=lambda t: (t.opened_at, t.id))

    def ticket_for(self, key: str) -> Ticket | None:
        return self._open.get(key)

    def open_ticket_by_id(self, ticket_id: str) -> Ticket | None:
        return next((t for t in self._open.values() if t.id == ticket_id), None)

    async def find_ticket(self, ticket_id: str) -> Ticket | None:
        """An open ticket from memory, or any ticket (closed ones too) from the store."""
        return self.open_ticket_by_id(ticket_id) or await self._repo.get_ticket(ticket_id)

    def condition(self, key: str) -> Condition:
        return self._conditions.get(key) or normal(key)

    def flags(self, key: str) -> frozenset[ConditionFlag]:
        return frozenset(self._flags.get(key, ()))

    def knows_asset(self, asset: str) -> bool:
        return asset in self._assets or any(t.asset == asset for t in self._open.values())

    def advisories(self) -> list[dict[str, Any]]:
        return [a.as_dict() for a in self._advisories]

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
            suppressed=self._suppressed,
            shelved_hits=self._shelved_hits,
            chattering=self._count_flag(ConditionFlag.CHATTERING),
            recurrences=self._recurrences,
            reopened=self._reopened,
            renotified=self._renotified,
            incidents=self._incidents,
            flood_members=self._flood_members,
            verified_pass=self._verified_pass,
            verified_fail=self._verified_fail,
        )

    def kpis(self) -> dict[str, Any]:
        """Alarm-management KPIs at the edge (issue 5), as a plain JSON-able dict for the
        health topic and `edge-gateway status`."""
        now = self._clock.now()
        priorities = Counter(t.priority.value for t in self._open.values())
        responses = self._first_responses
        within = sum(1 for _, ok in responses if ok)
        repeats = self._enriched + self._recurrences
        return {
            "conditions_per_10min": self._storms.per_area_in_window(now),
            "floods_active": sorted(f.area for f in self._storms.floods()),
            "floods_started": self._storms.floods_started,
            "time_in_flood_s": round(self._storms.time_in_flood_s(now), 1),
            "chattering": self._count_flag(ConditionFlag.CHATTERING),
            "stale": self._count_flag(ConditionFlag.STALE),
            "shelved": sum(1 for s in self._shelves.values() if s.active(now)),
            "suppressed": self._count_flag(ConditionFlag.SUPPRESSED),
            "out_of_service": self._count_flag(ConditionFlag.OUT_OF_SERVICE),
            "top10_share": self._storms.top_share(now),
            "priority_distribution": {p.value: priorities.get(p.value, 0) for p in Priority},
            "first_response": {
                "count": len(responses),
                "mean_s": sum(s for s, _ in responses) / len(responses) if responses else None,
                "within_sla": within,
                "breached": len(responses) - within,
            },
            "repeat_report_rate": repeats / self._opened if self._opened else None,
            "open_tickets": len(self._open),
            "opened": self._opened,
            "recurrences": self._recurrences,
            "renotified": self._renotified,
            "incidents": self._incidents,
            "advisories": self.advisories()[-10:],
        }

    # --- inputs -------------------------------------------------------------------------------

    async def on_finding(self, finding: Finding) -> None:
        """Apply one finding. Raises `StoreError` when state.db refuses; nothing changed then."""
        self._require_started()
        async with self._lock:
            await self._on_finding(finding)

    async def observe_samples(self, samples: Sequence[Sample]) -> None:
        """Samples as the telemetry store gets them: run states, link health, evidence windows
        and the running time of verifications."""
        self._require_started()
        async with self._lock:
            self._window.add(samples)
            for asset, running in self._run_states.observe(samples):
                log.info("Asset `%s` is %s.", asset, "running" if running else "stopped")
            for change in self._links.observe(samples):
                await self._on_link_change(change)
            for watch in self._watches.values():
                running = self._run_states.running(watch.asset)
                for sample in samples:
                    if sample.tag in watch.tags:
                        watch.observe(sample, running)
            for key, watch in list(self._watches.items()):
                if watch.due:
                    await self._finish_verification(key, watch, reraised=False)

    async def advance_timers(self) -> None:
        """Let time pass: condition delays, SLA re-notification, stale conditions, shelving and
        maintenance expiry, flood end and incident updates. The app calls it periodically."""
        self._require_started()
        now = self._clock.now()
        async with self._lock:
            for key, condition in list(self._conditions.items()):
                step = advance(condition, now, self._policy)
                if step.trigger is not None or step.changed:
                    await self._apply(step, self._last_active.get(key))
            await self._expire_shelves(now)
            for asset, until in list(self._maintenance.items()):
                if now >= until:
                    await self._repo.clear_maintenance(asset)
                    del self._maintenance[asset]
                    log.info("Asset `%s` is back from maintenance mode.", asset)
            await self._end_chattering(now)
            await self._mark_stale(now)
            await self._renotify(now)
            await self._advance_floods(now)

    async def run_timers(self, period_s: float = 1.0) -> None:
        """Run `advance_timers` every `period_s` until cancelled (the app's `ticketing` task)."""
        while True:
            await asyncio.sleep(period_s)
            await self.advance_timers()

    # --- central commands (the command handler checks ids, revisions and actors) --------------

    async def acknowledge(self, ticket_id: str, central_id: str | None, ts: float) -> Ticket | None:
        """The central `ack` command. Returns the ticket after the command, or None when no open
        ticket has that id. Acknowledging twice changes nothing the second time.
        """
        self._require_started()
        async with self._lock:
            ticket = self.open_ticket_by_id(ticket_id)
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
            await self._commit(acked, [event])
            self._open[acked.key] = acked
            self._acknowledged += 1
            if first_response and ticket.respond_by is not None:
                # Against the respond-by set at open: a re-notification moves the deadline on,
                # but the first response was still late.
                sla = ticket.attributes.get("sla", {})
                respond_s = sla.get("respond_s") if isinstance(sla, Mapping) else None
                deadline = (
                    ticket.opened_at + float(respond_s) if respond_s else ticket.respond_by
                )
                self._first_responses.append((ts - ticket.opened_at, ts <= deadline))
            log.info(
                "Ticket `%s` acknowledged by the central system as `%s`.",
                acked.id,
                acked.central_id or "-",
            )
            return acked

    async def assign(self, ticket: Ticket, assignee: str, team: str | None, ts: float) -> Ticket:
        async with self._lock:
            current = self._current(ticket)
            assignment = {"assignee": assignee, "team": team}
            attrs = tickets.with_attributes(current, assignment=assignment)
            moved, event = tickets.transition(
                current,
                TicketState.ASSIGNED,
                ts,
                {"assignee": assignee, "team": team},
                attributes=attrs,
            )
            await self._commit(moved, [event])
            self._open[moved.key] = moved
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
        """The central `close`. A repair starts verification (REPAIRED, VERIFYING); otherwise the
        ticket is CLOSED, or CANCELLED when a cancel reason is given."""
        async with self._lock:
            current = self._current(ticket)
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
                return await self._commit_closed(moved, [event])
            if not repaired:
                moved, event = tickets.transition(
                    current,
                    TicketState.CLOSED,
                    ts,
                    resolution_attr,
                    closed_at=ts,
                    attributes=attrs,
                )
                return await self._commit_closed(moved, [event])
            repaired_ticket, first = tickets.transition(
                current, TicketState.REPAIRED, ts, resolution_attr, attributes=attrs
            )
            window = self.policy.verification_window_s
            verifying, second = tickets.transition(
                repaired_ticket,
                TicketState.VERIFYING,
                ts,
                {"window_s": window},
            )
            await self._commit(verifying, [first, second])
            self._open[verifying.key] = verifying
            baseline = {
                str(k): float(v) for k, v in dict(current.attributes.get("baseline", {})).items()
            }
            self._watches[verifying.key] = VerificationWatch(
                verifying.key,
                verifying.asset,
                ts,
                baseline,
                window,
                tags=frozenset(self._profile(verifying.asset).tags) | frozenset(baseline),
            )
            log.info(
                "Ticket `%s` repaired; verifying `%s` over %.0f s of running time.",
                verifying.id,
                verifying.asset,
                window,
            )
            return verifying

    async def shelve(
        self, ticket: Ticket, until: float | None, reason: str, by: str, ts: float
    ) -> Ticket:
        """Shelve the ticket's condition: timed (at most `max_shelve_s`) or one-shot (None)."""
        async with self._lock:
            current = self._current(ticket)
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
            await self._commit(moved, [event], shelve=shelving)
            self._shelves[current.key] = shelving
            self._flags.setdefault(current.key, set()).add(ConditionFlag.SHELVED)
            self._open[moved.key] = moved
            log.info("Condition `%s` shelved by `%s`: %s.", current.key, by, reason)
            return moved

    async def unshelve(self, ticket: Ticket, by: str, ts: float) -> Ticket:
        async with self._lock:
            current = self._current(ticket)
            return await self._unshelve(current, by, ts)

    async def set_maintenance(self, asset: str, until: float, by: str) -> None:
        """Maintenance mode: the asset's findings open nothing until `until` (OUT_OF_SERVICE).
        Saved in state.db first, so it still holds after a restart."""
        self._require_started()
        async with self._lock:
            await self._repo.save_maintenance(asset, until, by, self._clock.now())
            self._maintenance[asset] = until
        log.info("Asset `%s` in maintenance mode until %.0f (by `%s`).", asset, until, by)

    def in_maintenance(self, asset: str) -> float | None:
        until = self._maintenance.get(asset)
        return until if until is not None and self._clock.now() < until else None

    async def resync(self) -> int:
        """Republish every open ticket as it stands (event `resync`, current revision)."""
        self._require_started()
        async with self._lock:
            now = self._clock.now()
            for ticket in self.open_tickets():
                event = TicketEvent(ticket.id, ticket.revision, "resync", now, {"reason": "resync"})
                await self._repo.enqueue(self._encode(ticket, event))
            return len(self._open)

    def snapshot(self, *, ticket: Ticket | None = None, asset: str | None = None) -> dict[str, Any]:
        """A bounded summary for `cmd/snapshot`: ticket facts, condition flags and per-tag
        min/mean/max/last; never raw samples."""
        now = self._clock.now()
        asset = ticket.asset if ticket is not None else asset
        if asset is None:
            raise ValueError("snapshot needs a ticket or an asset")
        profile = self._assets.get(asset)
        document: dict[str, Any] = {
            "asset": asset,
            "running": self._run_states.running(asset),
            "maintenance_until": self.in_maintenance(asset),
            "telemetry": self._window.summary(profile.tags if profile else (), now),
            "open_tickets": [
                {"id": t.id, "state": t.state.value, "priority": t.priority.value, "key": t.key}
                for t in self.open_tickets()
                if t.asset == asset
            ][:20],
        }
        if ticket is not None:
            condition = self.condition(ticket.key)
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
                "flags": sorted(self.flags(ticket.key)),
            }
        return document

    # --- one finding --------------------------------------------------------------------------

    async def _on_finding(self, finding: Finding) -> None:
        key = self.key_of(finding)
        self._findings += 1
        if finding.active:
            suppression = self._suppression(finding)
            flags = self._flags.setdefault(key, set())
            if suppression is not None:
                flag, reason = suppression
                self._suppressed += 1
                if flag not in flags:
                    flags.add(flag)
                    log.info("Condition `%s` %s: %s.", key, flag.value.lower(), reason)
                return
            if flags & {ConditionFlag.SUPPRESSED, ConditionFlag.OUT_OF_SERVICE}:
                flags -= {ConditionFlag.SUPPRESSED, ConditionFlag.OUT_OF_SERVICE}
                log.info("Condition `%s` no longer suppressed.", key)
            self._last_active[key] = finding
        step = observe(self.condition(key), finding.active, finding.ts, self._policy)
        await self._apply(step, finding)

    def _suppression(self, finding: Finding) -> tuple[ConditionFlag, str] | None:
        if finding.fault_code == FaultCode.COMM_LOST and self._links.is_link(finding.asset):
            return None
        link = self._links.inhibiting(finding.asset)
        if link is not None:
            return ConditionFlag.SUPPRESSED, f"upstream link `{link.id}` is lost"
        until = self.in_maintenance(finding.asset)
        if until is not None:
            return ConditionFlag.OUT_OF_SERVICE, "asset in maintenance mode"
        if not self._run_states.running(finding.asset):
            return ConditionFlag.SUPPRESSED, "asset stopped"
        return None

    async def _apply(self, step: ConditionStep, finding: Finding | None) -> None:
        """Turn a condition step into a ticket change, commit it, then update memory."""
        key = step.after.key
        trigger = step.trigger
        if trigger in (Trigger.RAISED, Trigger.REPEATED) and finding is not None:
            await self._on_raised(key, finding, new_episode=trigger is Trigger.RAISED)
        elif trigger is Trigger.CLEARED:
            await self._on_cleared(key, finding, step.after.since)
        if step.changed:
            log.debug("Condition `%s`: %s -> %s.", key, step.before.state, step.after.state)
        self._conditions[key] = step.after
        if step.after.state is ConditionState.NORMAL:
            self._flags.get(key, set()).discard(ConditionFlag.STALE)

    async def _on_raised(self, key: str, finding: Finding, *, new_episode: bool) -> None:
        ticket = self._open.get(key)
        chattering = False
        if new_episode:
            chattering = self._chatter.raised(key, finding.ts)
            if chattering:
                self._flag_chattering(key, finding.ts)
        shelving = self._shelves.get(key)
        if shelving is not None and shelving.active(self._clock.now()):
            self._shelved_hits += 1
            return
        if ticket is not None:
            if ticket.state is TicketState.VERIFYING and new_episode:
                watch = self._watches.get(key)
                if watch is not None:
                    await self._finish_verification(key, watch, reraised=True)
                return
            if ConditionFlag.CHATTERING in self._flags.get(key, ()) and new_episode:
                # The one ticket stays; a chattering re-raise is counted quietly and travels
                # with the next reported change (ISA-18.2: do not annunciate chatter).
                self._enrich_quietly(ticket, finding)
                return
            flood = self._flood_quieting(ticket) if new_episode else None
            if flood is not None:
                # During a flood the incident carries the counts; the area's open tickets are
                # enriched quietly and brought up to date once when the flood ends.
                self._arrive(key, finding)
                flood.quieted.add(key)
                self._enrich_quietly(ticket, finding)
                return
            await self._enrich(ticket, finding, new_occurrence=new_episode)
            flood = self._arrive(key, finding) if new_episode else None
            if flood is not None:
                await self._incident_for(flood, finding.ts)
            return
        if not new_episode:
            return  # closed by the central system while still active: wait for a new episode
        incident_key = self._member_of.get(key)
        if incident_key is not None and incident_key in self._open:
            self._arrive(key, finding)
            self._flood_members += 1
            return
        flood = self._arrive(key, finding)
        if flood is None:
            await self._open_or_recur(key, finding)
            return
        incident = await self._incident_for(flood, finding.ts)
        if finding.detector in self.policy.safety_detectors:
            # Safety rules keep their own ticket during a flood, linked to the incident.
            await self._open_or_recur(key, finding, incident_id=incident.id)
            return
        self._member_of[key] = incident.key
        self._flood_members += 1
        log.debug("Condition `%s` folded into incident `%s`.", key, incident.id)

    async def _on_cleared(self, key: str, finding: Finding | None, ts: float) -> None:
        shelving = self._shelves.get(key)
        ticket = self._open.get(key)
        if shelving is not None and shelving.until is None:
            # A one-shot shelve ends when its condition clears.
            if ticket is not None:
                ticket = await self._unshelve(ticket, "one-shot", ts)
            else:
                await self._repo.clear_shelving(key)
                del self._shelves[key]
                self._flags.get(key, set()).discard(ConditionFlag.SHELVED)
        if ticket is None or not ticket.condition_active:
            return
        if ConditionFlag.CHATTERING in self._flags.get(key, ()):
            return  # withheld while chattering; reported when the chatter ends
        flood = self._flood_quieting(ticket)
        if flood is not None:
            flood.quieted.add(key)
            return  # withheld during the area's flood; reported when it ends
        clearing_finding = finding if finding is not None and not finding.active else None
        cleared, event = tickets.clear_condition(ticket, clearing_finding, ts)
        await self._commit(cleared, [event])
        self._open[key] = cleared
        self._cleared += 1
        log.info(
            "Condition `%s` cleared; ticket `%s` stays open until the central system closes it.",
            key,
            ticket.id,
        )

    def _arrive(self, key: str, finding: Finding) -> AreaFlood | None:
        """Count a new condition for the flood detector of its area."""
        if finding.fault_code == FaultCode.ALARM_FLOOD:
            return None
        area = self._profile(finding.asset).flood_area
        flood, started = self._storms.arrive(
            area, Arrival(finding.ts, key, finding.asset, finding.fault_code)
        )
        if started:
            log.warning(
                "Alarm flood in area `%s`: more than %d new conditions in %.0f s.",
                area,
                self._storms.threshold,
                self._storms.window_s,
            )
        return flood

    # --- opening, enriching, recurrence -------------------------------------------------------

    async def _open_or_recur(
        self, key: str, finding: Finding, *, incident_id: str | None = None, **extra: Any
    ) -> Ticket:
        now = self._clock.now()
        last = await self._repo.last_closed_ticket(key)
        since_close = now - last.closed_at if last and last.closed_at is not None else None
        if (
            last is not None
            and since_close is not None
            and last.state is TicketState.CLOSED
            and since_close <= self.policy.reopen_within_s
        ):
            return await self._reopen(last, finding, since_close)
        recurrence_of = None
        if last is not None and since_close is not None:
            recurrence_of = last.id if since_close <= self.policy.recurrence_within_s else None
        ticket = await self._open_ticket(
            key, finding, recurrence_of=recurrence_of, incident_id=incident_id, **extra
        )
        if recurrence_of is not None:
            self._recurrences += 1
            log.info("Ticket `%s` is a recurrence of `%s`.", ticket.id, recurrence_of)
        return ticket

    async def _open_ticket(self, key: str, finding: Finding, **attributes: Any) -> Ticket:
        opened_at = self._clock.now()
        ticket_id = await self._free_ticket_id(opened_at)
        profile = self._profile(finding.asset)
        sla = self.policy.sla_for(finding.severity)
        attrs: dict[str, Any] = {
            "routing": profile.routing(self._site),
            "failure_coding": self._failure_coding(finding.fault_code),
            "knowledge": self._knowledge.recommend(finding.fault_code, profile.asset_class),
            "baseline": self._window.means(profile.tags, before=finding.ts),
            "sla": {"respond_s": sla.respond_s, "resolve_s": sla.resolve_s},
        }
        attrs |= {k: v for k, v in attributes.items() if v is not None}
        ticket, event = tickets.open_ticket(
            ticket_id,
            key,
            self._site,
            finding,
            opened_at,
            respond_by=opened_at + sla.respond_s,
            resolve_by=opened_at + sla.resolve_s,
            attributes=attrs,
            extra_evidence=self._telemetry_evidence(profile, opened_at),
        )
        await self._commit(ticket, [event])
        self._open[key] = ticket
        self._opened += 1
        log.info(
            "Opened ticket `%s` at %s for `%s`: %s", ticket.id, ticket.priority, key, ticket.message
        )
        return ticket

    async def _reopen(self, last: Ticket, finding: Finding, since_close: float) -> Ticket:
        now = self._clock.now()
        sla = self.policy.sla_for(last.priority)
        profile = self._profile(finding.asset)
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
            evidence=tickets.evidence_of(finding) | self._telemetry_evidence(profile, now),
            respond_by=now + sla.respond_s,
            resolve_by=now + sla.resolve_s,
        )
        await self._commit(reopened, [event])
        self._open[reopened.key] = reopened
        self._recurrences += 1
        self._reopened += 1
        log.info(
            "Ticket `%s` reopened: the fault came back %.0f s after closing.", last.id, since_close
        )
        return reopened

    async def _enrich(self, ticket: Ticket, finding: Finding, *, new_occurrence: bool) -> None:
        enriched, event = tickets.enrich(ticket, finding, new_occurrence=new_occurrence)
        if event is not None:
            profile = self._profile(ticket.asset)
            evidence = dict(enriched.evidence) | self._telemetry_evidence(profile, finding.ts)
            enriched = replace(enriched, evidence=evidence)
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

    # --- incidents (storms) -------------------------------------------------------------------

    async def _incident_for(self, flood: AreaFlood, ts: float) -> Ticket:
        """The flood's incident ticket: opened on the first call, updated (throttled) after."""
        if flood.incident_key is not None:
            incident = self._open.get(flood.incident_key)
            if incident is not None:
                await self._update_incident(flood, incident, ts, force=False)
                return self._open[flood.incident_key]
        priority = self._incident_priority(flood, ts)
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
                f"{self._storms.window_s / 60:.0f} min; suspected root cause {root.fault_code} "
                f"on {root.asset}."
            ),
            ts=ts,
            evidence={"incident": summary},
        )
        key = dedup_key(self._site, flood.area, FaultCode.ALARM_FLOOD, FLOOD_DETECTOR)
        linked = [t.id for t in self._open.values() if t.key in flood.members]
        incident = await self._open_or_recur(key, finding, incident=summary, linked_tickets=linked)
        flood.incident_key = key
        flood.published_members = len(flood.members)
        flood.published_at = ts
        self._incidents += 1
        return incident

    def _incident_priority(self, flood: AreaFlood, now: float) -> Priority:
        if self._storms.per_hour(flood.area, now) > self._storms.p0_per_hour:
            return Priority.P0
        return Priority.P1

    async def _update_incident(
        self, flood: AreaFlood, incident: Ticket, ts: float, *, force: bool, ended: bool = False
    ) -> None:
        priority = Priority.most_urgent(incident.priority, self._incident_priority(flood, ts))
        escalated = priority is not incident.priority
        due = ts - flood.published_at >= self.policy.incident_update_interval_s
        changed = len(flood.members) != flood.published_members
        if not (force or escalated or (due and changed)):
            return
        summary = flood.summary() | ({"ended_at": ts} if ended else {})
        updated, event = tickets.annotate(
            incident,
            "updated",
            ts,
            {
                "reason": "flood_ended" if ended else ("escalated" if escalated else "members"),
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
        await self._commit(updated, [event])
        self._open[updated.key] = updated
        flood.published_members = len(flood.members)
        flood.published_at = ts
        if escalated:
            self._escalated += 1
            log.warning("Incident `%s` escalated to %s.", incident.id, priority)

    async def _advance_floods(self, now: float) -> None:
        for flood in self._storms.floods():
            incident = self._open.get(flood.incident_key or "")
            if incident is not None:
                await self._update_incident(flood, incident, now, force=False)
        for flood in self._storms.end_floods(now):
            log.warning(
                "Alarm flood in area `%s` ended after %.0f s with %d members.",
                flood.area,
                now - flood.started_at,
                len(flood.members),
            )
            for member in flood.members:
                self._member_of.pop(member, None)
            incident = self._open.get(flood.incident_key or "")
            if incident is not None:
                await self._update_incident(flood, incident, now, force=True, ended=True)
            for key in sorted(flood.quieted):
                await self._catch_up_after_flood(key, now)

    def _flood_quieting(self, ticket: Ticket) -> AreaFlood | None:
        """The flood that quiets this ticket's updates, if its area is in one (not incidents,
        not safety rules)."""
        if ticket.fault_code == FaultCode.ALARM_FLOOD:
            return None
        if ticket.detector in self.policy.safety_detectors:
            return None
        return self._storms.flood(self._profile(ticket.asset).flood_area)

    async def _catch_up_after_flood(self, key: str, now: float) -> None:
        ticket = self._open.get(key)
        if ticket is None:
            return
        active = self.condition(key).state in (ConditionState.ACTIVE, ConditionState.CLEARING)
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
        await self._commit(updated, [event])
        self._open[key] = updated

    # --- topology ------------------------------------------------------------------------------

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
        await self._on_finding(finding)

    # --- verification ---------------------------------------------------------------------------

    async def _finish_verification(
        self, key: str, watch: VerificationWatch, *, reraised: bool
    ) -> None:
        ticket = self._open.get(key)
        del self._watches[key]
        if ticket is None or ticket.state is not TicketState.VERIFYING:
            return
        passed, figures = watch.verdict(self.policy.verification_tolerance)
        passed = passed and not reraised
        now = self._clock.now()
        detail = {
            "result": "pass" if passed else "fail",
            "reason": "the fault came back" if reraised else "compared with the pre-fault baseline",
            "running_s": watch.running_s,
            "figures": figures,
        }
        attrs = tickets.with_attributes(ticket, verification=detail)
        if passed:
            verified, first = tickets.transition(
                ticket, TicketState.VERIFIED, now, detail, attributes=attrs
            )
            closed, second = tickets.transition(
                verified, TicketState.CLOSED, now, {"reason": "verified"}, closed_at=now
            )
            await self._commit_closed(closed, [first, second])
            self._verified_pass += 1
            log.info("Repair of ticket `%s` verified; ticket closed.", ticket.id)
            return
        failed, first = tickets.annotate(ticket, "verified", now, detail, attributes=attrs)
        sla = self.policy.sla_for(ticket.priority)
        reopened, second = tickets.transition(
            failed,
            TicketState.REOPENED,
            now,
            {"reason": "verification failed"},
            condition_active=reraised or ticket.condition_active,
            respond_by=now + sla.respond_s,
            resolve_by=now + sla.resolve_s,
        )
        await self._commit(reopened, [first, second])
        self._open[key] = reopened
        self._verified_fail += 1
        self._reopened += 1
        log.warning("Repair of ticket `%s` failed verification; ticket reopened.", ticket.id)

    # --- timers ---------------------------------------------------------------------------------

    async def _renotify(self, now: float) -> None:
        for ticket in list(self._open.values()):
            if ticket.state not in tickets.ACKNOWLEDGEABLE or ticket.respond_by is None:
                continue
            if now <= ticket.respond_by:
                continue
            raised = ticket.priority.raised()
            sla = self.policy.sla_for(raised)
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
            await self._commit(renotified, [event])
            self._open[ticket.key] = renotified
            self._renotified += 1
            log.warning(
                "Ticket `%s` unacknowledged past its respond-by: re-notified at %s.",
                ticket.id,
                raised,
            )

    async def _mark_stale(self, now: float) -> None:
        for key, condition in self._conditions.items():
            if condition.state is not ConditionState.ACTIVE:
                continue
            if now - condition.since < self.policy.stale_after_s:
                continue
            flags = self._flags.setdefault(key, set())
            if ConditionFlag.STALE in flags:
                continue
            flags.add(ConditionFlag.STALE)
            log.warning(
                "Condition `%s` active for over %.0f h: stale.",
                key,
                self.policy.stale_after_s / 3600,
            )
            ticket = self._open.get(key)
            if ticket is None:
                continue
            stale, event = tickets.annotate(
                ticket,
                "condition_stale",
                now,
                {"active_since": condition.since, "active_for_s": now - condition.since},
            )
            await self._commit(stale, [event])
            self._open[key] = stale

    async def _end_chattering(self, now: float) -> None:
        for key, flags in self._flags.items():
            if ConditionFlag.CHATTERING not in flags or self._chatter.is_chattering(key, now):
                continue
            flags.discard(ConditionFlag.CHATTERING)
            log.info("Condition `%s` no longer chattering.", key)
            ticket = self._open.get(key)
            cleared = self.condition(key).state is ConditionState.NORMAL
            if ticket is not None and ticket.condition_active and cleared:
                await self._on_cleared(key, None, now)  # the clear withheld while chattering

    async def _expire_shelves(self, now: float) -> None:
        for key, shelving in list(self._shelves.items()):
            if shelving.active(now):
                continue
            ticket = self._open.get(key)
            if ticket is not None:
                await self._unshelve(ticket, "timer", now)
                continue
            await self._repo.clear_shelving(key)
            del self._shelves[key]
            self._flags.get(key, set()).discard(ConditionFlag.SHELVED)

    async def _unshelve(self, ticket: Ticket, by: str, ts: float) -> Ticket:
        moved, event = tickets.annotate(
            ticket,
            "unshelved",
            ts,
            {"by": by},
            attributes=tickets.with_attributes(ticket, shelved=None),
        )
        await self._commit(moved, [event], unshelve=ticket.key)
        self._shelves.pop(ticket.key, None)
        self._flags.get(ticket.key, set()).discard(ConditionFlag.SHELVED)
        self._open[moved.key] = moved
        log.info("Condition `%s` unshelved (%s).", ticket.key, by)
        return moved

    # --- helpers --------------------------------------------------------------------------------

    def _flag_chattering(self, key: str, ts: float) -> None:
        flags = self._flags.setdefault(key, set())
        if ConditionFlag.CHATTERING in flags:
            return
        flags.add(ConditionFlag.CHATTERING)
        advisory = Advisory(
            key,
            "chattering",
            ts,
            f"Condition {key} chatters ({self._chatter.cycles(key)} cycles in "
            f"{self.policy.chatter_window_s:.0f} s): widen its deadband or lengthen its "
            "off-delay.",
        )
        self._advisories = [*self._advisories, advisory][-MAX_ADVISORIES:]
        log.warning("Condition `%s` is chattering; clears are withheld. %s", key, advisory.message)

    def _enrich_quietly(self, ticket: Ticket, finding: Finding) -> None:
        """One more occurrence without a message; it travels with the next reported change."""
        quiet, _ = tickets.enrich(ticket, finding, new_occurrence=False)
        self._open[ticket.key] = replace(quiet, occurrences=ticket.occurrences + 1)

    def _profile(self, asset: str) -> AssetProfile:
        return self._assets.get(asset) or AssetProfile(asset)

    def _telemetry_evidence(self, profile: AssetProfile, now: float) -> dict[str, Any]:
        summary = self._window.summary(profile.tags, now)
        return {"telemetry": summary} if summary else {}

    def _failure_coding(self, fault_code: str) -> dict[str, Any]:
        coding: dict[str, Any] = {
            "iso14224_failure_mode": ISO14224_FAILURE_MODE.get(fault_code, "OTH")
        }
        cmms = self.policy.cmms_codes.get(fault_code)
        if cmms:
            coding["cmms"] = dict(cmms)
        return coding

    def _current(self, ticket: Ticket) -> Ticket:
        """The newest in-memory version of an open ticket (a command may hold an older copy)."""
        current = self._open.get(ticket.key)
        return current if current is not None and current.id == ticket.id else ticket

    def _count_flag(self, flag: ConditionFlag) -> int:
        return sum(1 for flags in self._flags.values() if flag in flags)

    async def _commit_closed(self, ticket: Ticket, events: Iterable[TicketEvent]) -> Ticket:
        # Closing ends a shelve too (a new ticket for the key starts unshelved).
        await self._commit(ticket, events, unshelve=ticket.key)
        self._open.pop(ticket.key, None)
        self._watches.pop(ticket.key, None)
        self._shelves.pop(ticket.key, None)
        self._flags.get(ticket.key, set()).discard(ConditionFlag.SHELVED)
        log.info("Ticket `%s` %s.", ticket.id, ticket.state.value.lower())
        return ticket

    async def _commit(
        self,
        ticket: Ticket,
        events: Iterable[TicketEvent],
        *,
        shelve: Shelving | None = None,
        unshelve: str | None = None,
    ) -> None:
        events = list(events)
        # Each message shows the ticket as of its own event (REPAIRED, then VERIFYING...).
        messages = [self._encode(_as_of(ticket, event), event) for event in events]
        try:
            await self._repo.commit_ticket_change(
                ticket, events, messages, shelve=shelve, unshelve=unshelve
            )
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


def _as_of(ticket: Ticket, event: TicketEvent) -> Ticket:
    state = ticket.state
    if event.kind.upper() in TicketState.__members__:
        state = TicketState(event.kind.upper())
    if state is ticket.state and event.revision == ticket.revision:
        return ticket
    return replace(ticket, state=state, revision=event.revision)
