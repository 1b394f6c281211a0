"""One run of the ticketing side on a state.db file, restartable: what a gateway process is to
the ticket service. Used by the tests of what survives a restart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.core.clock import ManualClock
from gateway.core.interfaces import Command, CommandReply
from gateway.store import StateDatabase
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.policy import AssetProfile, LifecyclePolicy
from gateway.ticketing.service import TicketService
from gateway.ticketing.topology import Link
from tests.ticketing.policies import default_policy
from tests.uplink.helpers import TOPICS
from uplink.events import make_ticket_encoder, source_urn


class Gateway:
    """`boot()` starts the service on the file; `restart()` is a new process on the same file."""

    def __init__(
        self,
        path: Path,
        clock: ManualClock,
        assets: Mapping[str, AssetProfile],
        policy: LifecyclePolicy | None = None,
        links: Sequence[Link] = (),
    ) -> None:
        self.path, self.clock = path, clock
        self.assets, self.policy = dict(assets), policy or default_policy()
        self.links = tuple(links)
        self.store: StateDatabase | None = None

    async def boot(self) -> None:
        self.store = await StateDatabase.open(self.path, clock=self.clock)
        encoder = make_ticket_encoder(TOPICS, source_urn("s", "g"), self.store.outbox.next_sequence)
        self.service = TicketService(
            "plant-a",
            "gw-1",
            self.store,
            encoder,
            self.clock,
            assets=self.assets,
            policy=self.policy,
            links=self.links,
        )
        self.commands = TicketCommands(
            self.service,
            self.store.outbox,
            self.store.commands,
            self.clock,
            actors=frozenset({"cmms"}),
        )
        await self.service.start()

    async def restart(self) -> None:
        await self.shutdown()
        await self.boot()

    async def shutdown(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    @property
    def db(self) -> StateDatabase:
        assert self.store is not None
        return self.store

    async def command(self, verb: str, command_id: str, **body: object) -> CommandReply:
        return await self.commands.handle(
            Command(verb, command_id, {"actor": "cmms", "command_id": command_id} | body)
        )

    async def kinds(self, ticket_id: str) -> list[str]:
        return [e.kind for e in await self.db.tickets.ticket_events(ticket_id)]
