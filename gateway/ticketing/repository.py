"""What the ticket lifecycle needs of state.db, as a protocol (`StateStore` has all of it).

`gateway.ticketing` may not import `gateway.store` (DESIGN.md section 1): both sides speak in
the records of `gateway.core.records` (`Shelving`, `MaintenanceWindow`, `FloodRecord`, ...).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from gateway.core.interfaces import NewMessage, TicketEvent, TicketRepository
from gateway.core.records import (
    ChatterRecord,
    FloodArrival,
    FloodRecord,
    MaintenanceWindow,
    Shelving,
    Ticket,
)


class LifecycleRepository(TicketRepository, Protocol):
    """What the lifecycle needs of state.db beyond `TicketRepository`."""

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

    async def load_shelvings(self, now: float) -> Sequence[Shelving]: ...

    async def save_maintenance(self, asset: str, until: float, by: str, set_at: float) -> None: ...

    async def clear_maintenance(self, asset: str) -> None: ...

    async def load_maintenance(self, now: float) -> Sequence[MaintenanceWindow]: ...

    # Issue 5: a flood in progress and chattering conditions survive a restart too.
    async def save_noise_state(
        self,
        *,
        floods: Sequence[FloodRecord],
        floods_ended: Collection[str],
        arrivals: Sequence[FloodArrival],
        forget_arrivals_before: float,
        chattering: Sequence[ChatterRecord],
        chatter_ended: Collection[str],
    ) -> None: ...

    async def load_floods(self) -> Sequence[FloodRecord]: ...

    async def load_flood_arrivals(self, since: float) -> Sequence[FloodArrival]: ...

    async def load_chattering(self) -> Sequence[ChatterRecord]: ...
