"""The bounded queue between the sources and the detector runner (DESIGN.md section 3),
with a hand-off of whole polls.

An `asyncio.Queue` bounded in records, so every source that puts one record at a time works
unchanged. A whole GOOD poll goes in as one item (a `Poll`), counted as its samples against
the bound, and the runner takes a batch with one `get_many_nowait`: per record, `put_nowait`
and `get_nowait` each do a room check, bookkeeping and a wake-up attempt, which at 100
registers a poll was the largest single cost of the per-sample path left (about 0.5 us a
record on the development machine). The bulk forms do the same bookkeeping once per call,
with the same effects: the unfinished-task count, the `join` event, and one waiter woken per
item moved, as the one-item calls do.

The bound is checked before an item goes in, so the queue may hold up to one poll more than
`maxsize` records: a poll is never split to fit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from gateway.core.interfaces import QueueItem, Record
from gateway.core.records import Poll, record_count


class RecordQueue(asyncio.Queue[QueueItem]):
    """`asyncio.Queue[QueueItem]` counted in records, plus `put_many` and `get_many_nowait`.

    Uses the queue's own state and hooks (`_init`, `_put`, `_get`, `_queue`, the waiters,
    the task count), which `asyncio.Queue` keeps for its subclasses in every supported
    Python (3.11 and later).
    """

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._records = 0

    def _put(self, item: QueueItem) -> None:
        self._queue.append(item)  # type: ignore[attr-defined]
        self._records += record_count(item)

    def _get(self) -> QueueItem:
        item: QueueItem = self._queue.popleft()  # type: ignore[attr-defined]
        self._records -= record_count(item)
        return item

    def qsize(self) -> int:
        """Records waiting (a poll counts as its samples)."""
        return self._records

    async def put_many(self, records: Sequence[Record] | Poll) -> None:
        """Put one poll's records in order (a `Poll` as one item); waits while the queue is
        full (back-pressure), so with room for all of them it never suspends."""
        if type(records) is Poll:
            if self.full():
                await self.put(records)  # suspends only while the queue is full
            else:
                self.put_nowait(records)
            return
        n = len(records)
        if not n:
            return
        maxsize = self.maxsize
        if maxsize > 0 and maxsize - self._records < n:
            for record in records:
                await self.put(record)  # suspends only while the queue is full
            return
        self._queue.extend(records)  # type: ignore[attr-defined]
        self._records += n
        self._unfinished_tasks += n  # type: ignore[attr-defined]
        self._finished.clear()  # type: ignore[attr-defined]
        self._wake(self._getters, n)  # type: ignore[attr-defined]

    def get_many_nowait(self, limit: int) -> list[QueueItem]:
        """Items holding up to `limit` records (at least one item when any waits), oldest
        first, without waiting (none when empty)."""
        queue: deque[QueueItem] = self._queue  # type: ignore[attr-defined]
        if limit <= 0 or not queue:
            return []
        if limit >= self._records:  # the usual case: the runner takes everything waiting
            items = list(queue)
            queue.clear()
            self._records = 0
        else:
            items = []
            taken = 0
            popleft = queue.popleft
            while queue and taken < limit:
                item = popleft()
                items.append(item)
                taken += record_count(item)
            self._records -= taken
        self._wake(self._putters, len(items))  # type: ignore[attr-defined]
        return items

    def _wake(self, waiters: deque[asyncio.Future[None]], count: int) -> None:
        """Wake up to `count` waiters, as `count` one-item calls would."""
        wakeup = self._wakeup_next  # type: ignore[attr-defined]
        for _ in range(count):
            if not waiters:
                return
            wakeup(waiters)
