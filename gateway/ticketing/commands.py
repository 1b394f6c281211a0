"""Central commands on `cmd/<verb>` applied to tickets (DESIGN.md section 7, issue 5).

The uplink parses the MQTT message (`uplink.commands.parse_command`) and replies on the MQTT 5
response topic; this module decides. Every reply says accepted or rejected with a reason, and
a rejection changes nothing:

- unauthorised: an actor not in `command_actors`, or a body whose `verb` is not the topic's;
- stale: `if_revision` given and not the ticket's current revision (the reply names it);
- unknown ticket, wrong state, bad field: rejected with the reason.

Idempotency: the reply to every authorised command is stored under its `command_id` in
state.db; a replay (the central system retrying after a lost reply) gets the same reply back
with `replayed: true` and has no second effect, across restarts too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from gateway.core.clock import Clock
from gateway.core.interfaces import Command, CommandReply, Outbox
from gateway.core.records import OutboxItem, Ticket, TicketState
from gateway.ticketing import tickets
from gateway.ticketing.service import TicketService

log = logging.getLogger(__name__)

MAX_TEXT = 2000


class CommandLog(Protocol):
    async def recall_command(self, command_id: str) -> Mapping[str, Any] | None: ...

    async def remember_command(
        self, command_id: str, verb: str, reply: Mapping[str, Any], now: float
    ) -> None: ...


class Rejected(Exception):
    """A command refused with a reason; raised inside a verb handler, turned into a reply."""

    def __init__(self, reason: str, **detail: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class TicketCommands:
    """The `CommandHandler` for ticket commands; `handle` is what the uplink calls."""

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
        self._verbs: dict[str, Callable[[Command], Awaitable[CommandReply]]] = {
            "ack": self._ack,
            "assign": self._assign,
            "close": self._close,
            "shelve": self._shelve,
            "unshelve": self._unshelve,
            "maintenance": self._maintenance,
            "snapshot": self._snapshot,
            "resync": self._resync,
        }
        self.accepted = 0
        self.rejected = 0
        self.replayed = 0

    async def handle(self, command: Command) -> CommandReply:
        unauthorised = self._unauthorised(command)
        if unauthorised is not None:
            # Not remembered: an unauthorised sender must not burn command ids.
            return self._reject(command, f"unauthorised: {unauthorised}")
        stored = await self._log.recall_command(command.command_id)
        if stored is not None:
            self.replayed += 1
            log.info(
                "Command `%s` (`%s`) is a replay; answering as the first time, no second effect.",
                command.command_id,
                command.verb,
            )
            return CommandReply(
                command.command_id,
                bool(stored.get("accepted")),
                str(stored.get("reason", "")),
                dict(stored.get("detail", {})) | {"replayed": True},
            )
        handler = self._verbs.get(command.verb)
        if handler is None:
            reply = self._reject(command, f"unknown command `{command.verb}`")
        else:
            try:
                reply = await handler(command)
            except Rejected as refused:
                reply = self._reject(command, refused.reason, refused.detail)
        if reply.accepted:
            self.accepted += 1
        document = {"accepted": reply.accepted, "reason": reply.reason, "detail": reply.detail}
        await self._log.remember_command(
            command.command_id, command.verb, document, self._clock.now()
        )
        return reply

    # --- checks -------------------------------------------------------------------------------

    def _unauthorised(self, command: Command) -> str | None:
        body_verb = command.body.get("verb")
        if body_verb is not None and body_verb != command.verb:
            return f"a `{body_verb}` command sent on the topic of `{command.verb}`"
        if not self._actors:
            return None
        actor = command.body.get("actor")
        if not isinstance(actor, str) or actor not in self._actors:
            return f"unknown actor `{actor}`"
        return None

    def _reject(
        self, command: Command, reason: str, detail: Mapping[str, Any] | None = None
    ) -> CommandReply:
        self.rejected += 1
        log.warning("Command `%s` (`%s`) rejected: %s.", command.command_id, command.verb, reason)
        return CommandReply(command.command_id, False, reason, dict(detail or {}))

    async def _ticket(self, command: Command, *, open_only: bool = True) -> Ticket:
        ticket_id = command.body.get("ticket_id")
        if not isinstance(ticket_id, str):
            raise Rejected("`ticket_id` is required")
        ticket = await self._service.find_ticket(ticket_id)
        if ticket is None:
            raise Rejected(f"unknown ticket `{ticket_id}`")
        if open_only and not ticket.state.is_open:
            raise Rejected(
                f"ticket `{ticket_id}` is {ticket.state.value}",
                current_revision=ticket.revision,
                state=ticket.state.value,
            )
        self._check_revision(command, ticket)
        return ticket

    @staticmethod
    def _check_revision(command: Command, ticket: Ticket) -> None:
        if "if_revision" not in command.body:
            return
        wanted = command.body["if_revision"]
        if not isinstance(wanted, int) or isinstance(wanted, bool):
            raise Rejected("`if_revision` must be an integer")
        if wanted != ticket.revision:
            raise Rejected(
                f"stale: ticket `{ticket.id}` is at revision {ticket.revision}, the command was "
                f"for revision {wanted}",
                current_revision=ticket.revision,
                state=ticket.state.value,
            )

    @staticmethod
    def _text(command: Command, name: str, *, required: bool = True) -> str | None:
        value = command.body.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise Rejected(f"`{name}` must be a non-empty string")
        if len(value) > MAX_TEXT:
            raise Rejected(f"`{name}` is longer than {MAX_TEXT} characters")
        return value

    @staticmethod
    def _accepted(command: Command, ticket: Ticket | None, /, **detail: Any) -> CommandReply:
        if ticket is not None:
            detail |= {
                "ticket_id": ticket.id,
                "revision": ticket.revision,
                "state": ticket.state.value,
            }
        return CommandReply(command.command_id, True, "", detail)

    # --- verbs --------------------------------------------------------------------------------

    async def _ack(self, command: Command) -> CommandReply:
        """Settle the acknowledged message(s), then move the ticket to ACKNOWLEDGED."""
        body = command.body
        event_id, ticket_id = body.get("event_id"), body.get("ticket_id")
        central_id = body.get("central_id")
        if event_id is None and ticket_id is None:
            raise Rejected("`ack` needs `event_id` and/or `ticket_id`")
        now = self._clock.now()
        settled: OutboxItem | None = None
        if isinstance(event_id, str):
            settled = await self._outbox.settle_event(event_id, now)
            if settled is not None and ticket_id is None:
                ticket_id = settled.ticket_id
        if not isinstance(ticket_id, str):
            if settled is None:
                raise Rejected(f"unknown or already settled event `{event_id}`")
            return self._accepted(command, None, settled=[settled.event_id])
        ticket = await self._service.find_ticket(ticket_id)
        if ticket is None:
            raise Rejected(f"unknown ticket `{ticket_id}`")
        self._check_revision(command, ticket)
        if ticket.state.is_open:
            acked = await self._service.acknowledge(
                ticket.id, central_id if isinstance(central_id, str) else None, now
            )
            ticket = acked or ticket
        settled_ids = [settled.event_id] if settled is not None else []
        return self._accepted(command, ticket, settled=settled_ids)

    async def _assign(self, command: Command) -> CommandReply:
        ticket = await self._ticket(command)
        assignee = self._text(command, "assignee")
        team = self._text(command, "team", required=False)
        if ticket.state not in tickets.ASSIGNABLE:
            raise Rejected(f"a {ticket.state.value} ticket cannot be assigned")
        assert assignee is not None
        moved = await self._service.assign(ticket, assignee, team, self._clock.now())
        return self._accepted(command, moved)

    async def _close(self, command: Command) -> CommandReply:
        ticket = await self._ticket(command)
        body = command.body
        cancel_reason = self._text(command, "cancel_reason", required=False)
        resolution = self._text(command, "resolution", required=cancel_reason is None)
        cause = self._text(command, "cause", required=False)
        repaired = body.get("repaired", False)
        if not isinstance(repaired, bool):
            raise Rejected("`repaired` must be true or false")
        if cancel_reason is not None and repaired:
            raise Rejected("a cancelled ticket cannot be repaired")
        if cancel_reason is None and ticket.state not in tickets.CLOSABLE:
            raise Rejected(f"a {ticket.state.value} ticket cannot be closed")
        closed = await self._service.close(
            ticket,
            resolution=resolution or cancel_reason or "",
            cause=cause,
            repaired=repaired,
            ts=self._clock.now(),
            cancel_reason=cancel_reason,
        )
        return self._accepted(command, closed, verifying=closed.state is TicketState.VERIFYING)

    async def _shelve(self, command: Command) -> CommandReply:
        ticket = await self._ticket(command)
        reason = self._text(command, "reason")
        one_shot = command.body.get("one_shot", False)
        duration = command.body.get("duration_s")
        max_s = self._service.policy.max_shelve_s
        now = self._clock.now()
        until: float | None
        if one_shot is True and duration is None:
            until = None
        elif isinstance(duration, int | float) and not isinstance(duration, bool):
            if not math.isfinite(duration) or not 0 < duration <= max_s:
                raise Rejected(f"`duration_s` must be between 0 and {max_s:.0f} s (ISA-18.2)")
            until = now + float(duration)
        else:
            raise Rejected("`shelve` needs `duration_s` (timed) or `one_shot: true`")
        assert reason is not None
        moved = await self._service.shelve(ticket, until, reason, self._actor(command), now)
        return self._accepted(command, moved, until=until)

    async def _unshelve(self, command: Command) -> CommandReply:
        ticket = await self._ticket(command)
        if "shelved" not in ticket.attributes:
            raise Rejected(f"ticket `{ticket.id}` is not shelved")
        moved = await self._service.unshelve(ticket, self._actor(command), self._clock.now())
        return self._accepted(command, moved)

    async def _maintenance(self, command: Command) -> CommandReply:
        asset = self._text(command, "asset")
        until = command.body.get("until")
        assert asset is not None
        if not self._service.knows_asset(asset):
            raise Rejected(f"unknown asset `{asset}`")
        now = self._clock.now()
        if not isinstance(until, int | float) or isinstance(until, bool) or until <= now:
            raise Rejected("`until` must be an epoch time in the future")
        await self._service.set_maintenance(asset, float(until), self._actor(command))
        return self._accepted(command, None, asset=asset, until=float(until))

    async def _snapshot(self, command: Command) -> CommandReply:
        # The summary goes straight into `detail`: replies are bounded to a shallow depth by the
        # egress guard (uplink/guard.py), and `detail.telemetry.<tag>.<figure>` fits it.
        if "ticket_id" in command.body:
            ticket = await self._ticket(command, open_only=False)
            return self._accepted(command, ticket, **self._service.snapshot(ticket=ticket))
        asset = self._text(command, "asset")
        assert asset is not None
        if not self._service.knows_asset(asset):
            raise Rejected(f"unknown asset `{asset}`")
        return self._accepted(command, None, **self._service.snapshot(asset=asset))

    async def _resync(self, command: Command) -> CommandReply:
        count = await self._service.resync()
        return self._accepted(command, None, republished=count)

    @staticmethod
    def _actor(command: Command) -> str:
        actor = command.body.get("actor")
        return actor if isinstance(actor, str) else "central"
