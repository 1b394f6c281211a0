"""The sources' shared timers behave as the asyncio calls they stand for (`asyncio.sleep` to a
time, `asyncio.timeout_at`), and the waiters of one deadline share one timer of the loop."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from gateway.core.ticks import GRANULARITY_S, call_at, rounded_up, sleep_until, within


def counting_call_at(loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list[float] = []
    real = loop.call_at

    def call_at(when, callback, *args, **kwargs):
        calls.append(when)
        return real(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", call_at)
    return calls


async def test_the_sleepers_of_one_deadline_share_a_timer_and_wake_in_one_turn(monkeypatch):
    loop = asyncio.get_running_loop()
    calls = counting_call_at(loop, monkeypatch)
    deadline = loop.time() + 0.05
    woken: list[float] = []

    async def sleeper() -> None:
        await sleep_until(loop, deadline)
        woken.append(loop.time())

    tasks = [asyncio.create_task(sleeper()) for _ in range(25)]
    cancelled = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    cancelled.cancel()  # a sleeper cancelled meanwhile: the others still wake
    await asyncio.gather(*tasks)
    assert calls.count(deadline) == 1
    assert len(woken) == 25 and min(woken) >= deadline
    assert cancelled.cancelled()
    # A later deadline gets a timer of its own.
    await sleep_until(loop, deadline + 0.01)
    assert calls.count(deadline + 0.01) == 1


async def test_a_sleep_to_a_past_deadline_returns_at_once():
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sleep_until(loop, started - 1.0)
    assert loop.time() - started < 0.05


async def test_a_block_that_outlives_its_deadline_raises_timeout_and_the_task_goes_on():
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with within(loop, loop.time() + 0.02):
            await asyncio.sleep(1.0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # not cancelled again: the block's cancel was taken back


async def test_a_block_done_before_its_deadline_is_not_cancelled_later(monkeypatch):
    loop = asyncio.get_running_loop()
    calls = counting_call_at(loop, monkeypatch)
    deadline = loop.time() + 0.03
    async with within(loop, deadline):
        await asyncio.sleep(0)
    # The shared timer still fires (other blocks may be inside); this task is left alone.
    await asyncio.sleep(0.06)
    assert calls.count(deadline) == 1


async def test_only_the_blocks_still_inside_at_the_deadline_time_out(monkeypatch):
    loop = asyncio.get_running_loop()
    calls = counting_call_at(loop, monkeypatch)
    deadline = loop.time() + 0.05

    async def poll(seconds: float) -> str:
        try:
            async with within(loop, deadline):
                await asyncio.sleep(seconds)
        except TimeoutError:
            return "timeout"
        return "done"

    results = await asyncio.gather(*(poll(s) for s in [0.0, 0.01, 0.2, 0.3, 0.02]))
    assert results == ["done", "done", "timeout", "timeout", "done"]
    assert calls.count(deadline) == 1


async def test_a_cancel_from_elsewhere_stays_a_cancel():
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()

    async def reader() -> None:
        async with within(loop, loop.time() + 10.0):
            entered.set()
            await asyncio.sleep(10.0)

    task = asyncio.create_task(reader())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_elsewhere_at_the_deadline_is_not_turned_into_a_timeout():
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.03
    entered = asyncio.Event()

    async def reader() -> None:
        async with within(loop, deadline):
            entered.set()
            await asyncio.sleep(10.0)

    task = asyncio.create_task(reader())
    await entered.wait()
    # Cancelled by its owner in the same turn of the loop as the deadline passes.
    loop.call_at(deadline, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_calls_of_one_deadline_share_a_timer_and_each_runs_once(monkeypatch):
    loop = asyncio.get_running_loop()
    calls = counting_call_at(loop, monkeypatch)
    deadline = loop.time() + 0.03
    ran: list[int] = []
    for n in range(10):
        call_at(loop, deadline, ran.append, n)
    await asyncio.sleep(0.06)
    assert ran == list(range(10))
    assert calls.count(deadline) == 1
    await asyncio.sleep(0.03)
    assert ran == list(range(10))  # not again


def test_deadlines_of_one_slot_round_up_to_one_float():
    # Requests started microseconds apart with the same timeout share a deadline; it is
    # never earlier than asked and at most one granule later.
    starts = [1000.003 + k * 1e-5 for k in range(50)]
    rounded = {rounded_up(start + 1.5) for start in starts}
    assert len(rounded) == 1
    (deadline,) = rounded
    assert all(start + 1.5 <= deadline < start + 1.5 + GRANULARITY_S for start in starts)
    assert rounded_up(2.0) == 2.0  # already on the grid


def test_a_loop_that_used_the_shared_timers_is_not_kept_alive_by_them():
    # Each test of the suite has a loop of its own, and a source cancelled mid-sleep leaves
    # its sleeper, its poll's deadline and its request's expiry pending: none of it may keep
    # the closed loop alive.
    loop = asyncio.new_event_loop()

    async def poll_then_sleep() -> None:
        running = asyncio.get_running_loop()
        async with within(running, running.time() + 1.0):
            call_at(running, running.time() + 10.0, print, "never")
        await sleep_until(running, running.time() + 10.0)

    task = loop.create_task(poll_then_sleep())
    loop.run_until_complete(asyncio.sleep(0.01))
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.close()
    ref = weakref.ref(loop)
    del loop, task
    gc.collect()
    assert ref() is None


async def test_a_failing_call_does_not_cost_the_others_of_its_deadline_their_call():
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        ran: list[str] = []

        def broken(_: object) -> None:
            raise ValueError("broken callback")

        deadline = loop.time() + 0.02
        call_at(loop, deadline, ran.append, "first")
        call_at(loop, deadline, broken, None)
        call_at(loop, deadline, ran.append, "last")
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(None)
    assert ran == ["first", "last"]
    (context,) = reported
    assert isinstance(context["exception"], ValueError)
