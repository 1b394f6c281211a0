"""An in-memory `Outbox` for unit tests of the uplink (a test double of our own storage).

It follows the `gateway.core.interfaces.Outbox` contract exactly, so that what the uplink tests
prove holds for the SQLite outbox too: items come out in `seq` order, stay until settled, and a
sent item is due again only `resend_after` seconds after its last send.
"""

from __future__ import annotations

import dataclasses

from gateway.core.interfaces import NewMessage
from gateway.core.records import OutboxItem


class MemoryOutbox:
    def __init__(self) -> None:
        self._items: dict[int, OutboxItem] = {}
        self._next_seq = 1
        self.settle_calls = 0

    async def enqueue(self, message: NewMessage) -> int:
        seq = self._next_seq
        self._next_seq += 1
        self._items[seq] = OutboxItem(
            seq=seq,
            event_id=message.event_id,
            topic=message.topic,
            payload=message.payload,
            kind=message.kind,
            created_at=0.0,
            ticket_id=message.ticket_id,
        )
        return seq

    def _unsettled(self) -> list[OutboxItem]:
        return [item for _, item in sorted(self._items.items()) if item.settled_at is None]

    async def due(self, now: float, resend_after: float, limit: int) -> list[OutboxItem]:
        due = [
            item
            for item in self._unsettled()
            if item.last_sent_at is None or now - item.last_sent_at >= resend_after
        ]
        return due[:limit]

    async def unsettled(self, limit: int) -> list[OutboxItem]:
        return self._unsettled()[:limit]

    async def mark_sent(self, seq: int, now: float) -> None:
        item = self._items[seq]
        self._items[seq] = dataclasses.replace(item, attempts=item.attempts + 1, last_sent_at=now)

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

    async def depth(self) -> int:
        return len(self._unsettled())

    # --- for assertions ------------------------------------------------------------------

    def get(self, seq: int) -> OutboxItem:
        return self._items[seq]

    def snapshot(self) -> list[OutboxItem]:
        return [item for _, item in sorted(self._items.items())]
