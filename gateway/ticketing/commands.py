"""Central commands on `cmd/<verb>` applied to tickets (DESIGN.md section 7).

The one home of every ticket command: `VERBS` names each verb with its body schema
(`command_schema`) and the method that applies it. The uplink checks only the envelope (size,
nesting, well-formed JSON, `command_id`) and calls `TicketCommands.handle`; everything about
a verb is decided here. Every reply says accepted or rejected with a reason, and a rejection
changes nothing, in memory or in state.db:

- unknown verb, or a body whose `verb` is not the topic's;
- unauthorised: an actor not in `command_actors`;
- a body that does not match the verb's schema (missing, unknown or wrong-typed fields,
  non-finite numbers, text too long), checked before anything is read or written;
- stale: `if_revision` given and not the ticket's current revision (the reply names it);
- unknown ticket or asset, wrong state.

Idempotency: the reply to every accepted command is stored under its `command_id` in state.db
for the idempotency window (`CommandLog`), with a fingerprint of verb and body; a replay (the
central system retrying after a lost reply) gets the same reply back with `replayed: true` and
has no second effect, across restarts too. The same id with a different command is rejected.
A rejected command left no effect to protect, so it is not stored: a repeat is judged again.

Adding a verb: its body model in `command_schema`, one method here, one line in `VERBS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.core.clock import Clock
from gateway.core.interfaces import Command, CommandLog, CommandReply, Outbox
from gateway.core.records import OutboxItem, Ticket, TicketState
from gateway.ticketing import tickets
from gateway.ticketing.coding import check_codes
from gateway.ticketing.command_schema import (
    AcceptCommand,
    AckCommand,
    AssignCommand,
    CloseCommand,
    ConfirmCommand,
    HoldCommand,
    MaintenanceCommand,
    ResumeCommand,
    ResyncCommand,
    ShelveCommand,
    SnapshotCommand,
    StartCommand,
    UnshelveCommand,
)
from gateway.ticketing.service import TicketService

log = logging.getLogger(__name__)

_MAX_SCHEMA_ERRORS = 3
ACK = "ack"


class Rejected(Exception):
    """A command refused with a reason; raised inside a verb handler, turned into a reply."""

    def __init__(self, reason: str, **detail: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class TicketCommands:
    """The command handler for ticket commands; `handle` is what the uplink calls."""

    def __init__(
        self,
        service: TicketService,
        outbox: Outbox,
        command_log: CommandLog,
        clock: Clock,
        *,
        actors: frozenset[str] = frozenset(),
    ) -> None:
        self._service = service
        self._outbox = outbox
        self._log = command_log
        self._clock = clock
        self._actors = actors
        self._applying = asyncio.Lock()
        # Inside `handle_many`: the writes queued so far, waited for once at the end, and what
        # was read for the whole batch at once (stored replies, messages by event id).
        self._deferred: list[asyncio.Future[Any]] | None = None
        self._recalled: Mapping[str, Mapping[str, Any]] = {}
        self._messages: dict[str, OutboxItem] | None = None
        # Inside `handle_many`: the acks' messages to settle by event id, each with the list
        # its reply reports as settled; settled together in one unit at the end of the batch.
        self._settling: list[tuple[str, list[str]]] | None = None
        self.accepted = 0
        self.rejected = 0
        self.replayed = 0

    async def handle(self, command: Command) -> CommandReply:
        checked = self._check(command)
        if isinstance(checked, CommandReply):
            return checked
        verb, body = checked
        # One command at a time from here: the uplink hands acks and other commands over in
        # separate lanes, and a revision checked by one must still hold when it applies, as
        # must "not seen before" for its command id.
        async with self._applying:
            stored = await self._log.recall_command(command.command_id)
            if stored is not None:
                return self._recalled_reply(command, stored)
            try:
                reply = await verb.apply(self, command, body)
            except Rejected as rejection:
                return self._reject(command, rejection.reason, rejection.detail)
            self.accepted += 1
            await self._log.remember_command(
                command.command_id, command.verb, _stored(command, reply), self._clock.now()
            )
            return reply

    def _recalled_reply(self, command: Command, stored: Mapping[str, Any]) -> CommandReply:
        """A command id seen before: the same command is answered as the first time; the same
        id for another command is refused (a replay would answer a command that was never
        applied) and the first one stands."""
        first = stored.get("fingerprint")
        if first is not None and first != _fingerprint(command):
            return self._reject(
                command,
                f"`command_id` `{_shown(command.command_id)}` was already used for a "
                "different command; use a new id",
                {"first_verb": str(stored.get("verb", ""))},
            )
        return self._replay(command, stored)

    async def handle_many(self, commands: Sequence[Command]) -> list[CommandReply]:
        """Commands that arrived together (the uplink's ack lane hands over its backlog), in
        order, each judged as `handle` would, after the ones before it. Their writes (settles,
        ticket changes, the command log) are committed together by state.db's group commit
        and waited for once; no reply is returned before everything is durable.
        Raises `StoreError` when state.db refused a write: none of these replies is sent then,
        and the central system sends the commands again."""
        replies: list[CommandReply] = []
        # The first reply to each command id accepted here, as the command log keeps it.
        first_reply: dict[str, dict[str, Any]] = {}
        async with self._applying:
            self._deferred, self._settling = [], []
            refused_before = self._log.writes_refused()
            self._recalled = await self._log.recall_commands([c.command_id for c in commands])
            event_ids = [c.body.get("event_id") for c in commands]
            self._messages = dict(
                await self._outbox.get_messages([e for e in event_ids if isinstance(e, str)])
            )
            try:
                async with self._service.together():
                    try:
                        for command in commands:
                            replies.append(await self._apply_one(command, first_reply))
                    finally:
                        # Queued before the burst ends, so that it joins its group commit.
                        self._queue_settles()
                    # The command log last, behind every write of the batch: one transaction
                    # with them, and never kept if any of them was refused.
                    self._remember(first_reply, refused_before)
            finally:
                deferred, self._deferred = self._deferred, None
                self._recalled, self._messages = {}, None
                await asyncio.gather(*deferred)
        return replies

    def _remember(self, first_reply: Mapping[str, dict[str, Any]], refused_before: int) -> None:
        entries = [(cid, reply["verb"], reply) for cid, reply in first_reply.items()]
        if entries and self._deferred is not None:
            remember = self._log.remember_commands(
                entries, self._clock.now(), unless_refused_since=refused_before
            )
            self._deferred.append(asyncio.ensure_future(remember))

    def _queue_settles(self, *, more: bool = False) -> None:
        """The acks' settles gathered so far, as one write of the batch; `more` when the batch
        goes on (a settle by ticket comes next and must see them done first, as in order)."""
        settling, self._settling = self._settling, ([] if more else None)
        if settling and self._deferred is not None:
            now = self._clock.now()
            self._deferred.append(asyncio.ensure_future(self._settle_together(settling, now)))

    async def _settle_together(self, settling: list[tuple[str, list[str]]], now: float) -> None:
        """One unit for the messages acked in a batch; each settled id is reported by the
        first ack that named it, as if they had been settled one after the other."""
        settled = await self._outbox.settle_events([event_id for event_id, _ in settling], now)
        for event_id, reported in settling:
            if event_id in settled:
                reported.append(event_id)
                settled.discard(event_id)

    async def _apply_one(
        self, command: Command, first_reply: dict[str, dict[str, Any]]
    ) -> CommandReply:
        checked = self._check(command)
        if isinstance(checked, CommandReply):
            return checked
        verb, body = checked
        if command.verb != ACK:
            # Other verbs take the service lock themselves; the ack lane never sends them.
            return self._reject(command, f"`{command.verb}` is not handled in a batch of acks")
        earlier = first_reply.get(command.command_id)
        if earlier is not None:  # a repeat inside the batch, before the first is remembered
            return self._recalled_reply(command, earlier)
        stored = self._recalled.get(command.command_id)
        if stored is not None:
            return self._recalled_reply(command, stored)
        try:
            reply = await verb.apply(self, command, body)
        except Rejected as rejection:
            return self._reject(command, rejection.reason, rejection.detail)
        self.accepted += 1
        first_reply[command.command_id] = _stored(command, reply)
        return reply

    def _check(self, command: Command) -> CommandReply | tuple[Verb, BaseModel]:
        """Verb, actor and body schema, before anything is read: a reply when refused."""
        verb = VERBS.get(command.verb)
        if verb is None:
            known = ", ".join(sorted(VERBS))
            shown = _shown(command.verb)
            return self._reject(command, f"unknown command verb `{shown}` (known: {known})")
        refused = self._unauthorised(command)
        if refused is not None:
            return self._reject(command, f"unauthorised: {refused}")
        try:
            body = verb.body.model_validate(dict(command.body))
        except ValidationError as exc:
            return self._reject(command, _schema_reason(exc))
        return verb, body

    async def _write(self, write: Awaitable[Any]) -> None:
        """A write of a command: awaited now, or, inside `handle_many`, queued (tasks start in
        order, so writes reach the group commit in order) and awaited with the batch."""
        if self._deferred is None:
            await write
        else:
            self._deferred.append(asyncio.ensure_future(write))

    # --- checks -------------------------------------------------------------------------------

    def _unauthorised(self, command: Command) -> str | None:
        body_verb = command.body.get("verb")
        if body_verb is not None and body_verb != command.verb:
            shown = _shown(body_verb) if isinstance(body_verb, str) else type(body_verb).__name__
            return f"a `{shown}` command sent on the topic of `{command.verb}`"
        if not self._actors:
            return None
        actor = command.body.get("actor")
        if not isinstance(actor, str) or actor not in self._actors:
            shown = _shown(actor) if isinstance(actor, str) else type(actor).__name__
            return f"unknown actor `{shown}`"
        return None

    def _replay(self, command: Command, stored: Mapping[str, Any]) -> CommandReply:
        self.replayed += 1
        log.info(
            "Command `%s` (`%s`) is a replay; answering as the first time, no second effect.",
            command.command_id,
            command.verb,
        )
        detail = stored.get("detail")
        return CommandReply(
            command.command_id,
            bool(stored.get("accepted")),
            str(stored.get("reason", "")),
            (dict(detail) if isinstance(detail, Mapping) else {}) | {"replayed": True},
        )

    def _reject(
        self, command: Command, reason: str, detail: Mapping[str, Any] | None = None
    ) -> CommandReply:
        self.rejected += 1
        log.warning(
            "Command `%s` (`%s`) rejected: %s.",
            _shown(command.command_id, 200),
            _shown(command.verb),
            reason,
        )
        return CommandReply(command.command_id, False, reason, dict(detail or {}))

    async def _ticket(
        self, ticket_id: str, if_revision: int | None, *, open_only: bool = True
    ) -> Ticket:
        ticket = await self._service.find_ticket(ticket_id)
        if ticket is None:
            raise Rejected(f"unknown ticket `{ticket_id}`")
        if open_only and not ticket.state.is_open:
            raise Rejected(
                f"ticket `{ticket_id}` is {ticket.state.value}",
                current_revision=ticket.revision,
                state=ticket.state.value,
            )
        _check_revision(ticket, if_revision)
        return ticket

    def _known_asset(self, asset: str) -> str:
        if not self._service.knows_asset(asset):
            raise Rejected(f"unknown asset `{asset}`")
        return asset

    @staticmethod
    def _accepted(command: Command, ticket: Ticket | None, /, **detail: Any) -> CommandReply:
        if ticket is not None:
            detail |= {
                "ticket_id": ticket.id,
                "revision": ticket.revision,
                "state": ticket.state.value,
            }
        return CommandReply(command.command_id, True, "", detail)

    # --- verbs: every check first, then the change --------------------------------------------

    async def _ack(self, command: Command, body: AckCommand) -> CommandReply:
        """Settle the acknowledged message(s), then move the ticket to ACKNOWLEDGED.

        With `event_id`: that message. With only `ticket_id`: every message of the ticket
        published so far (docs/TICKETS.md). An ack of a message already settled is accepted
        and settles nothing: the central system acks each copy it sees, and a copy resent
        before its first ack arrived is normal."""
        message: OutboxItem | None = None
        if body.event_id is not None:
            if self._messages is not None:  # read for the whole batch (`handle_many`)
                message = self._messages.get(body.event_id)
            else:
                message = await self._outbox.get_message(body.event_id)
            if message is None or not message.kind.needs_central_ack:
                raise Rejected(f"unknown ticket message `{body.event_id}`")
            if body.ticket_id is not None and message.ticket_id != body.ticket_id:
                raise Rejected(
                    f"message `{body.event_id}` belongs to ticket `{message.ticket_id}`, "
                    f"not `{body.ticket_id}`"
                )
        ticket_id = body.ticket_id or (message.ticket_id if message else None)
        ticket = await self._service.find_ticket(ticket_id) if ticket_id else None
        if ticket_id is not None and ticket is None and message is None:
            raise Rejected(f"unknown ticket `{ticket_id}`")
        if ticket is not None:
            _check_revision(ticket, body.if_revision)
        now = self._clock.now()
        # Filled once the settle is durable (at once, or at the end of `handle_many`).
        settled: list[str] = []
        event_id = body.event_id

        async def settle() -> None:
            if event_id is not None:
                one = await self._outbox.settle_event(event_id, now)
                settled.extend([one.event_id] if one is not None else [])
            else:
                assert ticket_id is not None  # the schema asks for one of the two
                settled.extend(m.event_id for m in await self._outbox.settle_ticket(ticket_id, now))

        if event_id is not None and self._settling is not None:
            self._settling.append((event_id, settled))  # with the batch's (`handle_many`)
        else:
            if self._settling is not None:
                self._queue_settles(more=True)
            await self._write(settle())
        if ticket is not None and ticket.state.is_open:
            acked = await self._service.acknowledge(
                ticket.id, body.central_id, now, _actor(body.actor)
            )
            ticket = acked or ticket
        extra = {"central_id": body.central_id} if body.central_id is not None else {}
        return self._accepted(command, ticket, settled=settled, **extra)

    async def _assign(self, command: Command, body: AssignCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        if ticket.state not in tickets.ASSIGNABLE:
            raise Rejected(f"a {ticket.state.value} ticket cannot be assigned")
        moved = await self._service.assign(
            ticket, body.assignee, body.team, self._clock.now(), _actor(body.actor)
        )
        return self._accepted(command, moved)

    async def _close(self, command: Command, body: CloseCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        if ticket.state is TicketState.VERIFIED and body.cancel_reason is None:
            raise Rejected(
                "a VERIFIED ticket is closed by its sign-off: send `confirm`",
                current_revision=ticket.revision,
                state=ticket.state.value,
            )
        if body.cancel_reason is None and ticket.state not in tickets.CLOSABLE:
            raise Rejected(f"a {ticket.state.value} ticket cannot be closed")
        if body.cancel_reason is None:
            assert body.cause_code is not None and body.remedy_code is not None  # the schema
            policy = self._service.policy
            refused = check_codes(
                body.cause_code,
                body.remedy_code,
                site_causes=policy.cause_codes,
                site_remedies=policy.remedy_codes,
            )
            if refused is not None:
                raise Rejected(refused)
        closed = await self._service.close(
            ticket,
            resolution=body.resolution or body.cancel_reason or "",
            cause=body.cause,
            repaired=body.repaired,
            ts=self._clock.now(),
            actor=_actor(body.actor),
            cause_code=body.cause_code,
            remedy_code=body.remedy_code,
            cancel_reason=body.cancel_reason,
        )
        return self._accepted(command, closed, verifying=closed.state is TicketState.VERIFYING)

    async def _accept(self, command: Command, body: AcceptCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        if ticket.state not in tickets.ACCEPTABLE:
            raise Rejected(f"a {ticket.state.value} ticket cannot be accepted")
        moved = await self._service.accept(ticket, body.note, self._clock.now(), body.actor)
        return self._accepted(command, moved)

    async def _start(self, command: Command, body: StartCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        if ticket.state not in tickets.STARTABLE:
            raise Rejected(f"work on a {ticket.state.value} ticket cannot start")
        moved = await self._service.start_work(ticket, body.note, self._clock.now(), body.actor)
        return self._accepted(command, moved)

    async def _hold(self, command: Command, body: HoldCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        if ticket.state not in tickets.HOLDABLE:
            raise Rejected(f"a {ticket.state.value} ticket cannot be put on hold")
        moved = await self._service.hold(
            ticket, body.reason, body.note, self._clock.now(), body.actor
        )
        return self._accepted(command, moved)

    async def _resume(self, command: Command, body: ResumeCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        if ticket.state is not TicketState.ON_HOLD:
            raise Rejected(f"a {ticket.state.value} ticket is not on hold")
        moved = await self._service.resume(ticket, body.note, self._clock.now(), body.actor)
        return self._accepted(command, moved)

    async def _confirm(self, command: Command, body: ConfirmCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        if ticket.state is not TicketState.VERIFIED:
            raise Rejected(
                f"only a VERIFIED ticket can be signed off; this one is {ticket.state.value}",
                current_revision=ticket.revision,
                state=ticket.state.value,
            )
        policy = self._service.policy
        if policy.require_signoff and body.actor not in policy.signoff_actors:
            raise Rejected(
                f"unauthorised: `{_shown(body.actor)}` may not sign off (the site asks for "
                "one of `ticketing.signoff_actors`)"
            )
        moved = await self._service.confirm(ticket, body.note, self._clock.now(), body.actor)
        return self._accepted(command, moved)

    async def _shelve(self, command: Command, body: ShelveCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        max_s = self._service.policy.max_shelve_s
        if body.duration_s is not None and body.duration_s > max_s:
            raise Rejected(f"`duration_s` must be between 0 and {max_s:.0f} s (ISA-18.2)")
        now = self._clock.now()
        until = None if body.duration_s is None else now + body.duration_s
        moved = await self._service.shelve(ticket, until, body.reason, _actor(body.actor), now)
        return self._accepted(command, moved, until=until)

    async def _unshelve(self, command: Command, body: UnshelveCommand) -> CommandReply:
        ticket = await self._ticket(body.ticket_id, body.if_revision)
        if "shelved" not in ticket.attributes:
            raise Rejected(f"ticket `{ticket.id}` is not shelved")
        moved = await self._service.unshelve(ticket, _actor(body.actor), self._clock.now())
        return self._accepted(command, moved)

    async def _maintenance(self, command: Command, body: MaintenanceCommand) -> CommandReply:
        asset = self._known_asset(body.asset)
        if body.until <= self._clock.now():
            raise Rejected("`until` must be an epoch time in the future")
        await self._service.set_maintenance(asset, body.until, _actor(body.actor))
        return self._accepted(command, None, asset=asset, until=body.until)

    async def _snapshot(self, command: Command, body: SnapshotCommand) -> CommandReply:
        # The summary goes straight into `detail`: replies are bounded to a shallow depth by the
        # egress guard (uplink/guard.py), and `detail.telemetry.<tag>.<figure>` fits it.
        if body.ticket_id is not None:
            ticket = await self._ticket(body.ticket_id, body.if_revision, open_only=False)
            return self._accepted(command, ticket, **self._service.snapshot(ticket=ticket))
        assert body.asset is not None  # the schema asks for one of the two
        asset = self._known_asset(body.asset)
        return self._accepted(command, None, **self._service.snapshot(asset=asset))

    async def _resync(self, command: Command, body: ResyncCommand) -> CommandReply:
        done = await self._service.resync()
        return self._accepted(
            command, None, republished=done.republished, already_queued=done.already_queued
        )


Apply = Callable[[TicketCommands, Command, Any], Awaitable[CommandReply]]


def _stored(command: Command, reply: CommandReply) -> dict[str, Any]:
    """What the command log keeps of an accepted command: its reply, and the verb and
    fingerprint that tell a repeat from another command under the same id."""
    return {
        "accepted": reply.accepted,
        "reason": reply.reason,
        "detail": dict(reply.detail),
        "verb": command.verb,
        "fingerprint": _fingerprint(command),
    }


@dataclass(frozen=True, slots=True)
class Verb:
    body: type[BaseModel]  # the schema of the body, published in the contract
    apply: Apply


# The verb table: the only list of ticket commands.
VERBS: Mapping[str, Verb] = {
    "ack": Verb(AckCommand, TicketCommands._ack),
    "assign": Verb(AssignCommand, TicketCommands._assign),
    "close": Verb(CloseCommand, TicketCommands._close),
    "accept": Verb(AcceptCommand, TicketCommands._accept),
    "start": Verb(StartCommand, TicketCommands._start),
    "hold": Verb(HoldCommand, TicketCommands._hold),
    "resume": Verb(ResumeCommand, TicketCommands._resume),
    "confirm": Verb(ConfirmCommand, TicketCommands._confirm),
    "shelve": Verb(ShelveCommand, TicketCommands._shelve),
    "unshelve": Verb(UnshelveCommand, TicketCommands._unshelve),
    "maintenance": Verb(MaintenanceCommand, TicketCommands._maintenance),
    "snapshot": Verb(SnapshotCommand, TicketCommands._snapshot),
    "resync": Verb(ResyncCommand, TicketCommands._resync),
}


def command_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every command body by verb, as the contract publishes it."""
    return {name: verb.body.model_json_schema() for name, verb in sorted(VERBS.items())}


def _check_revision(ticket: Ticket, wanted: int | None) -> None:
    if wanted is not None and wanted != ticket.revision:
        raise Rejected(
            f"stale: ticket `{ticket.id}` is at revision {ticket.revision}, the command was "
            f"for revision {wanted}",
            current_revision=ticket.revision,
            state=ticket.state.value,
        )


def _fingerprint(command: Command) -> str:
    """What makes two commands the same command: the verb and the body, as canonical JSON."""
    canonical = json.dumps(
        {"verb": command.verb, "body": dict(command.body)}, sort_keys=True, ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _actor(actor: str | None) -> str:
    return actor if actor is not None else "central"


def _shown(text: str, limit: int = 60) -> str:
    """Hostile text made safe for a log line and a reply: bounded, control characters and
    anything that is not plain ASCII escaped."""
    shown = ascii(text[:limit])[1:-1]
    return shown + ("..." if len(text) > limit else "")


def _schema_reason(exc: ValidationError) -> str:
    """Pydantic's errors as one line a central-system integrator can act on; never the
    offending value (it is hostile input and may be huge)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_SCHEMA_ERRORS]:
        field = _shown(".".join(str(part) for part in error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown field `{field}`")
        elif error["type"] == "missing":
            parts.append(f"`{field}` is required")
        elif field:
            parts.append(f"`{field}`: {message[:1].lower()}{message[1:]}")
        else:
            parts.append(message)
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
