"""What the ticket lifecycle needs of state.db, as protocols (`StateStore` has all of it).

`gateway.ticketing` may not import `gateway.store` (DESIGN.md section 1): the store's rows come
back as objects with these read-only fields, and what the service saves goes in as its own
dataclasses, which the store reads through protocols of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from gateway.core.interfaces import NewMessage, TicketEvent, TicketRepository
from gateway.core.records import Ticket
from gateway.ticketing.noise import Shelving


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


class FloodRecord(Protocol):
    """An area's alarm flood in progress, as saved and loaded (see `journal`)."""

    @property
    def area(self) -> str: ...

    @property
    def started_at(self) -> float: ...

    @property
    def incident_key(self) -> str | None: ...

    @property
    def published_members(self) -> int: ...

    @property
    def published_at(self) -> float | None: ...

    @property
    def members(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def folded(self) -> Sequence[str]: ...

    @property
    def quieted(self) -> Sequence[str]: ...


class ArrivalRecord(Protocol):
    """One new condition counted by the flood detector of an area."""

    @property
    def area(self) -> str: ...

    @property
    def ts(self) -> float: ...

    @property
    def key(self) -> str: ...

    @property
    def asset(self) -> str: ...

    @property
    def fault_code(self) -> str: ...


class ChatterRecord(Protocol):
    """A condition flagged CHATTERING and the raise times that still count for it."""

    @property
    def key(self) -> str: ...

    @property
    def raises(self) -> Sequence[float]: ...


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

    async def load_shelvings(self, now: float) -> Sequence[StoredShelving]: ...

    async def save_maintenance(self, asset: str, until: float, by: str, set_at: float) -> None: ...

    async def clear_maintenance(self, asset: str) -> None: ...

    async def load_maintenance(self, now: float) -> Sequence[StoredMaintenance]: ...

    # Issue 5: a flood in progress and chattering conditions survive a restart too.
    async def save_noise_state(
        self,
        *,
        floods: Sequence[FloodRecord],
        floods_ended: Collection[str],
        arrivals: Sequence[ArrivalRecord],
        forget_arrivals_before: float,
        chattering: Sequence[ChatterRecord],
        chatter_ended: Collection[str],
    ) -> None: ...

    async def load_floods(self) -> Sequence[FloodRecord]: ...

    async def load_flood_arrivals(self, since: float) -> Sequence[ArrivalRecord]: ...

    async def load_chattering(self) -> Sequence[ChatterRecord]: ...
