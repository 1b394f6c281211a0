"""An in-memory `Outbox` for unit tests of the uplink (a test double of our own storage).

It follows the `gateway.core.interfaces.Outbox` contract exactly, so that what the uplink tests
prove holds for the SQLite outbox too: items come out in `seq` order, stay until settled, a
sent item is due again only `resend_after` seconds after its last send, a coalesced message is
not queued twice while one is unsettled, and every commit signals `wait_for_messages`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Sequence

from gateway.core.clock import Clock
from gateway.core.interfaces import NewMessage
from gateway.core.records import OutboxItem, OutboxKind


class MemoryOutbox:
    def __init__(self, clock: Clock | None = None) -> None:
        """`clock` stamps `created_at` as state.db does (0.0 without one)."""
        self._clock = clock
        self._items: dict[int, OutboxItem] = {}
        self._coalesce: dict[int, str] = {}
        self._next_seq = 1
        self._sequence = 0
        self._new = asyncio.Event()
        self.settle_calls = 0

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    async def enqueue(self, message: NewMessage) -> int | None:
        key = message.coalesce_key
        if key is not None and any(
            self._coalesce.get(item.seq) == key for item in self._unsettled()
        ):
            return None
        seq = self._next_seq
        self._next_seq += 1
        self._items[seq] = OutboxItem(
            seq=seq,
            event_id=message.event_id,
            topic=message.topic,
            payload=message.payload,
            kind=message.kind,
            created_at=self._clock.now() if self._clock is not None else 0.0,
            ticket_id=message.ticket_id,
            content_type=message.content_type,
            user_properties=message.user_properties,
        )
        if key is not None:
            self._coalesce[seq] = key
        self._new.set()
        return seq

    async def wait_for_messages(self) -> None:
        await self._new.wait()
        self._new.clear()

    def _unsettled(self) -> list[OutboxItem]:
        return [item for _, item in sorted(self._items.items()) if item.settled_at is None]

    async def due(self, now: float, resend_after: float, limit: int) -> list[OutboxItem]:
        due = [
            item
            for item in self._unsettled()
            if item.last_sent_at is None or now - item.last_sent_at >= resend_after
        ]
        return due[:limit]

    async def unsettled(self, limit: int, after_seq: int = 0) -> list[OutboxItem]:
        return [item for item in self._unsettled() if item.seq > after_seq][:limit]

    async def get_messages(self, event_ids: Collection[str]) -> dict[str, OutboxItem]:
        return {i.event_id: i for i in self._items.values() if i.event_id in set(event_ids)}

    async def get_message(self, event_id: str) -> OutboxItem | None:
        return next((i for i in self._items.values() if i.event_id == event_id), None)

    async def mark_sent(self, seq: int, now: float) -> None:
        item = self._items[seq]
        self._items[seq] = dataclasses.replace(item, attempts=item.attempts + 1, last_sent_at=now)

    async def mark_sent_many(self, seqs: Sequence[int], now: float) -> None:
        for seq in seqs:
            await self.mark_sent(seq, now)

    async def settle_many(self, seqs: Sequence[int], now: float) -> None:
        for seq in seqs:
            await self.settle(seq, now)

    async def settle(self, seq: int, now: float) -> None:
        item = self._items[seq]
        if item.settled_at is None:
            self.settle_calls += 1
            self._items[seq] = dataclasses.replace(item, settled_at=now)

    async def settle_event(self, event_id: str, now: float) -> OutboxItem | None:
        for item in self._unsettled():
            if item.event_id == event_id:
                await self.settle(item.seq, now)
                return self._items[item.seq]
        return None

    async def settle_events(self, event_ids: Sequence[str], now: float) -> set[str]:
        settled = set()
        for event_id in event_ids:
            if await self.settle_event(event_id, now) is not None:
                settled.add(event_id)
        return settled

    async def settle_ticket(self, ticket_id: str, now: float) -> list[OutboxItem]:
        settled = []
        for item in self._unsettled():
            if item.ticket_id == ticket_id and item.kind.needs_central_ack and item.attempts:
                await self.settle(item.seq, now)
                settled.append(self._items[item.seq])
        return settled

    async def refuse(self, seq: int, now: float) -> None:
        await self.settle(seq, now)

    async def shed(self, max_depth: int, kinds: Collection[OutboxKind]) -> dict[str, int]:
        counts: dict[str, int] = {}
        excess = len(self._unsettled()) - max_depth
        for item in self._unsettled():
            if excess <= 0:
                break
            if item.kind in kinds:
                del self._items[item.seq]
                counts[item.kind.value] = counts.get(item.kind.value, 0) + 1
                excess -= 1
        return counts

    async def depth(self) -> int:
        return len(self._unsettled())

    async def backlog(self) -> tuple[dict[str, int], float | None]:
        by_kind: dict[str, int] = {}
        for item in self._unsettled():
            by_kind[item.kind.value] = by_kind.get(item.kind.value, 0) + 1
        oldest = min((i.created_at for i in self._unsettled()), default=None)
        return by_kind, oldest

    # --- for assertions ------------------------------------------------------------------

    def get(self, seq: int) -> OutboxItem:
        return self._items[seq]

    def snapshot(self) -> list[OutboxItem]:
        return [item for _, item in sorted(self._items.items())]
