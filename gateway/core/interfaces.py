"""The seams between layers, as `typing.Protocol`s (DESIGN.md sections 1-3).

Concrete classes live in `protocols/`, `detectors/`, `uplink/` and `gateway/store/`; only
`gateway/app.py` names them. Everything else works against these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from gateway.core.records import (
    ChatterRecord,
    DerivedTag,
    FaultCode,
    Finding,
    FloodArrival,
    FloodRecord,
    GroupRecord,
    MaintenanceWindow,
    OutboxItem,
    OutboxKind,
    Poll,
    Sample,
    Shelving,
    StormMemberRecord,
    Tag,
    Ticket,
    UserProperties,
    Waveform,
)
from gateway.core.spectrum_view import SpectrumView

Record = Sample | Waveform
# What the records queue between sources and runner holds: a record, or a whole GOOD poll as
# one item (`Poll`; the queue counts its samples against its bound).
QueueItem = Sample | Waveform | Poll


class PollingDriver(Protocol):
    """Talks to one endpoint. Enter connects, exit closes (idempotent, never raises).

    `read()` performs one poll and returns one record per configured tag; a point that
    cannot be decoded comes back as a BAD sample with a reason. A failure of the whole
    endpoint raises a `DriverError`; the source task owns retries, backoff and BAD samples.
    """

    @property
    def endpoint(self) -> str: ...

    def tags(self) -> Sequence[Tag]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def read(self) -> Sequence[Record]: ...


class StreamingDriver(Protocol):
    """An endpoint that pushes (CAN, OPC UA subscriptions). Same lifecycle as PollingDriver."""

    @property
    def endpoint(self) -> str: ...

    def tags(self) -> Sequence[Tag]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def records(self) -> AsyncIterator[Record]: ...


class LineUnit(Protocol):
    """One device on a shared line (an RTU unit): reads go through the line's connection."""

    @property
    def device_id(self) -> str: ...

    @property
    def timeout_s(self) -> float:
        """Longest a failing request can hold the line."""
        ...

    def tags(self) -> Sequence[Tag]: ...

    async def read(self) -> Sequence[Record]: ...


class SharedLine(Protocol):
    """A connection several devices share (a serial port). Enter opens, exit closes."""

    @property
    def endpoint(self) -> str: ...

    def units(self) -> Sequence[LineUnit]: ...

    def tags(self) -> Sequence[Tag]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Inspectable(Protocol):
    """A driver (or line unit) that can tell an engineer more than its records, for
    `edge-gateway probe`: the requests it makes, the raw value behind each tag's latest
    record, and the labels of enumerated states. Keeping the raw values costs a reference per
    poll or frame, nothing on the hot path."""

    def describe_plan(self) -> list[str]:
        """The requests of one poll or the subscriptions and frames listened to, one per line."""
        ...

    def raw_values(self) -> Mapping[str, str]:
        """Tag id -> the raw value of its latest reading as text (registers, node value,
        frame bytes); tags without one are left out."""
        ...

    def state_labels(self) -> Mapping[str, Mapping[int, str]]:
        """Tag id -> value -> label, for enumerated state points."""
        ...


class Detector(Protocol):
    """Synchronous and pure: no await, no I/O. `update` returns raised or cleared findings."""

    @property
    def name(self) -> str: ...

    @property
    def asset(self) -> str:
        """The asset its findings are about (a detector that fails is reported under it)."""
        ...

    @property
    def derived_tags(self) -> Sequence[DerivedTag]:
        """Tags it computes (`FeatureDetector.feature_samples`); empty for most detectors."""
        ...

    @property
    def inputs(self) -> frozenset[str]:
        """Tag ids this detector wants to see."""
        ...

    def update(self, record: Record) -> list[Finding]: ...


@runtime_checkable
class FeatureDetector(Protocol):
    """A detector that also derives samples from what it analyses (the vibration family's
    velocity RMS, kurtosis...): stored as telemetry and fed to ticketing like measured tags,
    so evidence and verification after repair can compare them."""

    def feature_samples(self) -> list[Sample]:
        """Samples derived since the last call (then forgotten)."""
        ...


@dataclass(frozen=True, slots=True)
class ResumedCondition:
    """A condition that was active when the gateway stopped (its ticket says so)."""

    asset: str
    detector: str  # `Finding.detector` of the findings that raised it
    fault_code: FaultCode


@runtime_checkable
class ResumableDetector(Protocol):
    """A detector told, before its first record, which of its conditions were active when the
    gateway stopped. On fresh data it then reports their clear (with its off-delay) when the
    value came back to normal in the gap, and does not raise them again when it did not: a
    restart neither leaves a condition stuck nor re-triggers it (DESIGN.md section 9)."""

    @property
    def asset(self) -> str: ...

    def resume(self, conditions: Sequence[ResumedCondition]) -> None:
        """`conditions` are those of this detector's asset; it takes the ones it raised."""
        ...


@runtime_checkable
class SnapshottingDetector(Protocol):
    """A detector whose learnt state (a baseline, active faults) is kept across restarts."""

    @property
    def name(self) -> str: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class SpectrumDetector(Protocol):
    """A detector whose analysis of a waveform tag the local site page can draw (the
    vibration family): read-only, computed on request in a worker thread, never sent off-site."""

    @property
    def name(self) -> str: ...

    @property
    def asset(self) -> str: ...

    @property
    def tag_id(self) -> str:
        """The waveform tag it analyses."""
        ...

    def spectrum_view(self, waveform: Waveform) -> SpectrumView | None:
        """The block's spectra with the lines of the last diagnosis marked; None when the
        block cannot be drawn (another tag, a BAD block)."""
        ...


@dataclass(frozen=True, slots=True)
class TicketEvent:
    """One change of a ticket, stored locally with a monotonically rising revision."""

    ticket_id: str
    revision: int
    kind: str  # opened | updated | condition_cleared | acknowledged | ...
    ts: float
    detail: Mapping[str, Any] = field(default_factory=dict)


JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to be committed to the outbox together with the change it announces.

    `content_type` and `user_properties` are its MQTT 5 properties, stored with it (the uplink
    publishes them as they are). Messages with the same `coalesce_key` are not queued twice:
    while one of them is unsettled, committing another is a no-op (`resync` of a ticket).
    """

    event_id: str
    topic: str
    payload: bytes
    kind: OutboxKind
    ticket_id: str | None = None
    content_type: str = JSON_CONTENT_TYPE
    user_properties: UserProperties = ()
    coalesce_key: str | None = None


# Turns a ticket change into the outgoing message that announces it (built by `uplink`).
MessageEncoder = Callable[[Ticket, TicketEvent], NewMessage]


# --- state.db, one interface per role ---------------------------------------------------------
# `gateway.store.StateDatabase` opens the file and hands out one object per role; ticketing,
# uplink and the runtime each get the roles they use. A write that spans roles (a ticket change
# and the messages announcing it, a shelve saved with its event) is one transaction, done by
# the role that owns the change (`TicketRepository.commit_ticket_change`).


class TicketRepository(Protocol):
    """Durable ticket state. A change, its events and its messages commit in one transaction."""

    async def load_open_tickets(self) -> list[Ticket]: ...

    async def get_ticket(self, ticket_id: str) -> Ticket | None: ...

    async def last_closed_ticket(self, key: str) -> Ticket | None:
        """The most recently closed (or cancelled) ticket of a dedup key; for recurrence."""
        ...

    async def tickets_since(self, ts: float) -> list[Ticket]:
        """Open tickets and those opened or closed at `ts` or later (outcome KPIs)."""
        ...

    async def commit_ticket_change(
        self,
        ticket: Ticket,
        events: Sequence[TicketEvent],
        messages: Sequence[NewMessage],
        *,
        shelve: Shelving | None = None,
        unshelve: str | None = None,
    ) -> None:
        """Write the ticket, its events, its messages and the shelving change atomically, or
        nothing (raises `StoreError`)."""
        ...


class Outbox(Protocol):
    """The only way out of the gateway. Items stay until settled."""

    def next_sequence(self) -> int:
        """The next per-gateway CloudEvents sequence number; rises across restarts."""
        ...

    async def enqueue(self, message: NewMessage) -> int | None:
        """Commit one message that announces no ticket change; its sequence number, or None
        when an unsettled message with the same `coalesce_key` is already queued."""
        ...

    async def wait_for_messages(self) -> None:
        """Return once a message was committed since the last return (one consumer: the
        uplink). Commits signal it themselves; nobody has to wake the uplink."""
        ...

    async def due(self, now: float, resend_after: float, limit: int) -> list[OutboxItem]:
        """Unsettled items never sent, or last sent more than `resend_after` seconds ago."""
        ...

    async def unsettled(self, limit: int, after_seq: int = 0) -> list[OutboxItem]:
        """Unsettled items in order, sent or not, from the first after `after_seq` (used
        after a reconnect, page by page)."""
        ...

    async def get_message(self, event_id: str) -> OutboxItem | None:
        """One item by CloudEvents id, settled or not."""
        ...

    async def get_messages(self, event_ids: Collection[str]) -> Mapping[str, OutboxItem]:
        """The items of these CloudEvents ids that exist, by id, in one read."""
        ...

    async def mark_sent(self, seq: int, now: float) -> None: ...

    async def mark_sent_many(self, seqs: Sequence[int], now: float) -> None:
        """`mark_sent` for a published batch, in one transaction."""
        ...

    async def settle(self, seq: int, now: float) -> None:
        """Settle by sequence number (the PUBACK of a message that needs no central ack)."""
        ...

    async def settle_many(self, seqs: Sequence[int], now: float) -> None:
        """`settle` for a published batch, in one transaction."""
        ...

    async def settle_event(self, event_id: str, now: float) -> OutboxItem | None:
        """Settle by CloudEvents id (the central ack). None when unknown or already settled."""
        ...

    async def settle_events(self, event_ids: Sequence[str], now: float) -> set[str]:
        """`settle_event` for several ids (the acks of a batch) in one unit: the ids settled
        by this call (unknown and already settled ones are not)."""
        ...

    async def settle_ticket(self, ticket_id: str, now: float) -> list[OutboxItem]:
        """Settle every unsettled message of a ticket that has been published at least once
        (the central ack naming only the ticket); returns them in order."""
        ...

    async def refuse(self, seq: int, now: float) -> None:
        """Settle an item the egress guard refused, so it is never tried again."""
        ...

    async def shed(self, max_depth: int, kinds: Collection[OutboxKind]) -> Mapping[str, int]:
        """Delete the oldest unsettled messages of `kinds` until at most `max_depth` unsettled
        messages remain (or none of `kinds` is left); returns how many per kind."""
        ...

    async def depth(self) -> int: ...

    async def backlog(self) -> tuple[dict[str, int], float | None]:
        """Unsettled messages per kind, and when the oldest of them was committed."""
        ...


class CommandLog(Protocol):
    """The replies of accepted central commands by `command_id`, so that a repeat has no second
    effect; kept for an idempotency window (age and count, see docs/TICKETS.md)."""

    async def recall_command(self, command_id: str) -> Mapping[str, Any] | None: ...

    async def recall_commands(
        self, command_ids: Collection[str]
    ) -> Mapping[str, Mapping[str, Any]]:
        """`recall_command` for several ids in one read: the stored replies found, by id."""
        ...

    async def remember_command(
        self, command_id: str, verb: str, reply: Mapping[str, Any], now: float
    ) -> None: ...

    async def remember_commands(
        self,
        entries: Sequence[tuple[str, str, Mapping[str, Any]]],
        now: float,
        *,
        unless_refused_since: int | None = None,
    ) -> None:
        """`remember_command` for several (`command_id`, verb, reply) in one write.

        With `unless_refused_since` (a `writes_refused()` taken before the writes these replies
        answer for were queued): committed with those writes when it can, and refused with a
        `StoreError` when state.db refused any write since, so that the log never keeps the
        reply of a change that was not committed."""
        ...

    def writes_refused(self) -> int:
        """How many writes state.db has refused so far: a mark for `remember_commands`."""
        ...


class NoiseStateJournal(Protocol):
    """Noise-control state that survives a restart: shelving, maintenance mode, alarm floods and
    chattering conditions (docs/TICKETS.md, "Which condition flags survive a restart")."""

    async def clear_shelving(self, key: str) -> None: ...

    async def load_shelvings(self, now: float) -> Sequence[Shelving]:
        """The shelvings still in force at `now`; timed ones that ran out are dropped."""
        ...

    async def save_maintenance(self, asset: str, until: float, by: str, set_at: float) -> None: ...

    async def clear_maintenance(self, asset: str) -> None: ...

    async def load_maintenance(self, now: float) -> Sequence[MaintenanceWindow]: ...

    async def save_noise_state(
        self,
        *,
        floods: Sequence[FloodRecord],
        floods_ended: Collection[str],
        arrivals: Sequence[FloodArrival],
        forget_arrivals_before: float | None,
        chattering: Sequence[ChatterRecord],
        chatter_ended: Collection[str],
        members: Sequence[StormMemberRecord] = (),
        members_gone: Collection[tuple[str, str]] = (),
        groups: Sequence[GroupRecord] = (),
        groups_ended: Collection[str] = (),
        group_arrivals: Sequence[FloodArrival] = (),
        forget_group_arrivals_before: float | None = None,
    ) -> None: ...

    async def load_floods(self) -> Sequence[FloodRecord]: ...

    async def load_storm_members(self, prefix: str) -> Sequence[StormMemberRecord]: ...

    async def load_groups(self) -> Sequence[GroupRecord]: ...

    async def load_group_arrivals(self, since: float) -> Sequence[FloodArrival]: ...

    async def load_flood_arrivals(self, since: float) -> Sequence[FloodArrival]: ...

    async def load_chattering(self) -> Sequence[ChatterRecord]: ...


class StateRoles(Protocol):
    """What opens state.db hands out: one object per role."""

    @property
    def tickets(self) -> TicketRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def commands(self) -> CommandLog: ...

    @property
    def noise(self) -> NoiseStateJournal: ...


@dataclass(frozen=True, slots=True)
class Command:
    """A command from the central system, already parsed from `cmd/<verb>`."""

    verb: str
    command_id: str
    body: Mapping[str, Any]
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class CommandReply:
    command_id: str
    accepted: bool
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


CommandHandler = Callable[[Command], Awaitable[CommandReply]]
