"""Timers shared by the sources that wait for the same moment: one timer of the event loop per
distinct deadline, however many sources wait for it.

The sources of one phase wake at the same tick (`source.TICK_LATTICE_S`) and each bounds its
poll by a timeout. With a timer each, 500 devices at 1 s put three timers a second per device
on the loop's heap (the tick, the poll's timeout, the request's), each pushed and popped with
a Python-level comparison per level of a heap of a few thousand, and cancelled ones linger
until their time. Measured on the development VM (2026-12-08, 500 tasks in phases of 25,
1 000 other timers pending): a tick cost 19.7 µs of CPU per device with a timer each, 12.3 µs
with one timer per tick; `asyncio.timeout` around a call 7.9 µs.

`sleep_until(loop, deadline)`, `within(loop, deadline)` and `call_at(loop, deadline, fn, arg)`
behave as `asyncio.sleep` to a time, `asyncio.timeout_at` and `loop.call_at`; the deadlines
that should be shared are computed to the same float by their callers (the sources' ticks on
their lattice, timeouts rounded up with `rounded_up`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from types import TracebackType
from typing import Any

# Timeouts are rounded up to this, so that those started in one slot share a timer.
GRANULARITY_S = 0.02


def rounded_up(deadline: float) -> float:
    """`deadline` rounded up to `GRANULARITY_S`: the same float for every deadline of a slot."""
    return math.ceil(deadline / GRANULARITY_S) * GRANULARITY_S


class _Watch:
    """One `within` block: its task while it is inside (let go at the exit: the watch stays
    on its deadline's list until then, and must not keep a finished task alive), and whether
    the deadline passed while it was inside."""

    __slots__ = ("cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[object], cancelling: int) -> None:
        self.task: asyncio.Task[object] | None = task
        self.cancelling = cancelling  # the task's cancel requests when the block was entered
        self.expired = False


class _Timers:
    """The shared timers of one event loop (kept on it, `_timers`; the loop is passed in): per
    deadline, the calls due then, run by one timer."""

    def __init__(self) -> None:
        self._calls: dict[float, list[tuple[Callable[[Any], object], Any]]] = {}

    def call(
        self,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        callback: Callable[[Any], object],
        arg: Any,
    ) -> None:
        calls = self._calls.get(deadline)
        if calls is None:
            calls = self._calls[deadline] = []
            loop.call_at(deadline, self._run, loop, deadline)
        calls.append((callback, arg))

    def _run(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        for callback, arg in self._calls.pop(deadline):
            try:
                callback(arg)
            except Exception as exc:  # reported as the loop reports a failed callback
                # The others of the deadline still run: a request's expiry lost to another's
                # failure would leave that request waiting until its poll's timeout.
                loop.call_exception_handler(
                    {"message": f"shared timer callback {callback!r} failed", "exception": exc}
                )


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a sleeper cancelled meanwhile
        waiter.set_result(None)


def _expire(watch: _Watch) -> None:
    if watch.task is not None:  # still inside its block
        watch.expired = True
        watch.task.cancel()


# A loop's timers are kept on the loop itself: their pending waiters refer to the loop, so a
# module-level map (even a weak one) would keep every loop that ever waited alive.
_ATTRIBUTE = "_gateway_shared_timers"


def _timers(loop: asyncio.AbstractEventLoop) -> _Timers:
    timers: _Timers | None = getattr(loop, _ATTRIBUTE, None)
    if timers is None:
        timers = _Timers()
        setattr(loop, _ATTRIBUTE, timers)  # asyncio's loops take attributes
    return timers


async def sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Sleep until `deadline` of the loop's clock; the sleepers of one deadline share a
    timer and wake in one turn of the loop (a delay would be added to the time of each call,
    which differs by microseconds from one sleeper to the next)."""
    waiter: asyncio.Future[None] = loop.create_future()
    call_at(loop, deadline, _wake, waiter)
    await waiter


def call_at(
    loop: asyncio.AbstractEventLoop, deadline: float, callback: Callable[[Any], object], arg: Any
) -> None:
    """`loop.call_at(deadline, callback, arg)` on the timer shared by that deadline. It cannot
    be cancelled: a callback that may come too late checks whether it is still wanted (a
    request's expiry looks whether its answer came), which costs less than a timer each."""
    _timers(loop).call(loop, deadline, callback, arg)


class within:  # named as `asyncio.timeout_at`, which it stands for
    """`asyncio.timeout_at(deadline)` with the timer shared by every block of that deadline:
    when it passes, the task is cancelled and the block raises `TimeoutError`. As in
    `asyncio.Timeout`, a cancellation from elsewhere stays a cancellation."""

    __slots__ = ("_deadline", "_loop", "_watch")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self._loop = loop
        self._deadline = deadline
        self._watch: _Watch | None = None

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("`within` must be used inside a task")
        self._watch = watch = _Watch(task, task.cancelling())
        call_at(self._loop, self._deadline, _expire, watch)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        watch = self._watch
        assert watch is not None and watch.task is not None, "left before entered"
        task, watch.task = watch.task, None
        if watch.expired and (
            task.uncancel() <= watch.cancelling and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
