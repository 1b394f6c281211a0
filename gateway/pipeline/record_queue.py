"""The bounded queue between the sources and the detector runner (DESIGN.md section 3),
with a hand-off of whole polls.

An `asyncio.Queue` of records, bounded in records as before, so every source that puts one
record at a time works unchanged. A poll's records go in with one `put_many` and the runner
takes a batch with one `get_many_nowait`: per record, `put_nowait` and `get_nowait` each do
a room check, bookkeeping and a wake-up attempt, which at 100 registers a poll was the
largest single cost of the per-sample path left (about 0.5 us a record on the development
machine). The bulk forms do the same bookkeeping once per call, with the same
effects: the unfinished-task count, the `join` event, and one waiter woken per record
moved, as the one-record calls do.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from gateway.core.interfaces import Record


class RecordQueue(asyncio.Queue[Record]):
    """`asyncio.Queue[Record]` plus `put_many` and `get_many_nowait`.

    The bulk forms use the queue's own state (`_queue`, the waiters, the task count), which
    `asyncio.Queue` keeps for its subclasses in every supported Python (3.11 and later).
    """

    async def put_many(self, records: Sequence[Record]) -> None:
        """Put the records in order; waits while the queue is full (back-pressure), so with
        room for all of them it never suspends."""
        n = len(records)
        if not n:
            return
        maxsize = self.maxsize
        if maxsize > 0 and maxsize - self.qsize() < n:
            for record in records:
                await self.put(record)  # suspends only while the queue is full
            return
        self._queue.extend(records)  # type: ignore[attr-defined]
        self._unfinished_tasks += n  # type: ignore[attr-defined]
        self._finished.clear()  # type: ignore[attr-defined]
        self._wake(self._getters, n)  # type: ignore[attr-defined]

    def get_many_nowait(self, limit: int) -> list[Record]:
        """Up to `limit` records, oldest first, without waiting (none when empty)."""
        queue = self._queue  # type: ignore[attr-defined]
        take = min(limit, len(queue))
        if take <= 0:
            return []
        if take == len(queue):  # the usual case: the runner takes everything waiting
            records = list(queue)
            queue.clear()
        else:
            popleft = queue.popleft
            records = [popleft() for _ in range(take)]
        self._wake(self._putters, take)  # type: ignore[attr-defined]
        return records

    def _wake(self, waiters: deque[asyncio.Future[None]], count: int) -> None:
        """Wake up to `count` waiters, as `count` one-record calls would."""
        wakeup = self._wakeup_next  # type: ignore[attr-defined]
        for _ in range(count):
            if not waiters:
                return
            wakeup(waiters)
