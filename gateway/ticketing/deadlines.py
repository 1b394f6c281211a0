"""When each piece of timer work is next due, so that a tick looks only at what is due
(so that its cost stays flat in the number of open tickets and conditions).

A `DeadlineQueue` holds one deadline per key (a dedup key, an asset, a ticket id) in a heap.
Moving a key's deadline does not search the heap: it pushes a new entry and bumps the key's
version; the old entry stays and is skipped when it comes to the top (lazy invalidation).
`pop_due` hands out each key whose current deadline has come, once; the caller checks the
object it names against the live state (it may be gone or changed in a way that moved its
deadline), does the work and schedules the next deadline, if any.

`examined` counts the entries taken off the heap, live or stale: the work of the ticks so far.
A tick with nothing due examines none, however many keys are waiting. `run_due` does the work
of each due key and, should one fail (state.db refused), leaves that one and the rest due, so
the next tick tries them again as a scan of everything would.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# The heap is rebuilt from the live deadlines when stale entries outnumber them this many
# times over (plus a floor, so a small queue is never rebuilt for a handful of entries):
# memory stays proportional to the keys waiting, the rebuild amortised over the pushes.
COMPACT_FACTOR = 2
COMPACT_FLOOR = 1024


class DeadlineQueue(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K, int]] = []  # (due, seq, key, version)
        self._live: dict[K, tuple[float, int]] = {}  # key -> (due, version) now in force
        self._seq = itertools.count()  # ties broken by the order of scheduling
        self.examined = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def due_at(self, key: K) -> float | None:
        live = self._live.get(key)
        return live[0] if live is not None else None

    def schedule(self, key: K, due: float | None) -> None:
        """The key's deadline is now `due` (None: it has none, as `cancel`)."""
        if due is None:
            self.cancel(key)
            return
        live = self._live.get(key)
        if live is not None and live[0] == due:
            return  # unchanged: no new entry
        version = live[1] + 1 if live is not None else 0
        self._live[key] = (due, version)
        heapq.heappush(self._heap, (due, next(self._seq), key, version))
        self._compact_if_sparse()

    def cancel(self, key: K) -> None:
        self._live.pop(key, None)

    def clear(self) -> None:
        self._heap.clear()
        self._live.clear()

    def pop_due(self, now: float) -> list[K]:
        """The keys whose deadline is at or before `now`, earliest first (ties: in the order
        they were scheduled), each taken out of the queue."""
        heap, due = self._heap, []
        while heap and heap[0][0] <= now:
            at, _, key, version = heapq.heappop(heap)
            self.examined += 1
            if self._live.get(key) == (at, version):
                del self._live[key]
                due.append(key)
        return due

    def _compact_if_sparse(self) -> None:
        if len(self._heap) <= COMPACT_FACTOR * len(self._live) + COMPACT_FLOOR:
            return
        live = self._live
        self._heap = [e for e in self._heap if live.get(e[2]) == (e[0], e[3])]
        heapq.heapify(self._heap)


async def run_due(
    queue: DeadlineQueue[K], now: float, work: Callable[[K, float], Awaitable[None]]
) -> None:
    """`work(key, now)` for each key due by `now`, earliest first. The work checks the key
    against the live state and schedules what comes next (or nothing)."""
    keys = queue.pop_due(now)
    for done, key in enumerate(keys):
        try:
            await work(key, now)
        except BaseException:
            for left in keys[done:]:
                if left not in queue:
                    queue.schedule(left, now)
            raise
