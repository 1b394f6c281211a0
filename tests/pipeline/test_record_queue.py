"""RecordQueue: whole polls in and whole batches out, with the bound, the order and the
wake-ups of the one-record `asyncio.Queue` calls (DESIGN.md section 3: when full, sources
wait; memory does not grow)."""

from __future__ import annotations

import asyncio

from gateway.core.records import Poll, Sample
from gateway.pipeline.record_queue import RecordQueue


def poll(device: str, n: int, ts: float = 1.0) -> list[Sample]:
    return [Sample(f"{device}.r{i}", ts, float(i)) for i in range(n)]


async def test_a_poll_put_whole_comes_out_in_order_and_counts_its_records() -> None:
    queue = RecordQueue(maxsize=10)
    first, second = poll("a", 3), poll("b", 4)
    await queue.put_many(first)
    await queue.put_many(second)
    assert queue.qsize() == 7
    assert queue.get_many_nowait(5) == [*first, *second[:2]]
    assert queue.get_many_nowait(100) == second[2:]
    assert queue.get_many_nowait(100) == []
    assert queue.empty()


async def test_a_poll_larger_than_the_room_waits_until_the_runner_takes_records() -> None:
    queue = RecordQueue(maxsize=4)
    await queue.put_many(poll("a", 3))
    records = poll("b", 3)
    putting = asyncio.create_task(queue.put_many(records))
    await asyncio.sleep(0.01)
    assert not putting.done()  # one record went in (the room there was), two wait
    assert queue.qsize() == 4  # never above the bound
    taken = queue.get_many_nowait(10)
    await asyncio.wait_for(putting, 1.0)
    assert taken == [*poll("a", 3), records[0]]
    assert queue.get_many_nowait(10) == records[1:]


async def test_a_batch_taken_wakes_as_many_waiting_sources_as_it_freed_room_for() -> None:
    queue = RecordQueue(maxsize=2)
    await queue.put_many(poll("a", 2))
    waiting = [asyncio.create_task(queue.put(Sample(f"s{i}.r0", 1.0, 0.0))) for i in range(2)]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in waiting)
    queue.get_many_nowait(2)
    await asyncio.wait_for(asyncio.gather(*waiting), 1.0)
    assert [r.tag for r in queue.get_many_nowait(10)] == ["s0.r0", "s1.r0"]


async def test_a_waiting_runner_is_woken_by_a_poll() -> None:
    queue = RecordQueue(maxsize=10)
    getting = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    records = poll("a", 3)
    await queue.put_many(records)
    assert await asyncio.wait_for(getting, 1.0) is records[0]
    assert queue.get_many_nowait(10) == records[1:]


async def test_join_counts_every_record_of_a_poll() -> None:
    queue = RecordQueue(maxsize=10)
    await queue.put_many(poll("a", 3))
    queue.get_many_nowait(10)
    for _ in range(2):
        queue.task_done()
    joining = asyncio.create_task(queue.join())
    await asyncio.sleep(0.01)
    assert not joining.done()  # one record of the three still unfinished
    queue.task_done()
    await asyncio.wait_for(joining, 1.0)


# --- a whole GOOD poll as one item (`Poll`) -------------------------------------------------


def whole(device: str, n: int, ts: float = 1.0) -> Poll:
    return Poll(tuple(f"{device}.r{i}" for i in range(n)), ts, [float(i) for i in range(n)])


async def test_a_poll_counts_as_its_samples_against_the_bound() -> None:
    queue = RecordQueue(maxsize=10)
    await queue.put_many(whole("a", 6))
    assert queue.qsize() == 6  # records, not items
    await queue.put_many(whole("b", 6))  # room was checked before: one poll over, never split
    assert queue.qsize() == 12
    assert queue.full()
    putting = asyncio.create_task(queue.put_many(whole("c", 2)))
    await asyncio.sleep(0.01)
    assert not putting.done()  # full: the source waits (back-pressure)
    taken = queue.get_many_nowait(6)
    assert [len(item) for item in taken] == [6]  # a poll is never split to fit the limit
    await asyncio.wait_for(putting, 1.0)
    assert queue.qsize() == 8
    assert [len(item) for item in queue.get_many_nowait(100)] == [6, 2]
    assert queue.qsize() == 0 and queue.empty()


async def test_a_batch_limit_takes_whole_items_until_it_holds_the_limit() -> None:
    queue = RecordQueue()
    await queue.put_many(whole("a", 3))
    await queue.put_many(poll("b", 2))
    await queue.put_many(whole("c", 3))
    first = queue.get_many_nowait(4)  # 3 + 1: the limit reached within the second item
    assert [type(item).__name__ for item in first] == ["Poll", "Sample"]
    assert queue.qsize() == 4
    rest = queue.get_many_nowait(100)
    assert [type(item).__name__ for item in rest] == ["Sample", "Poll"]
    assert queue.qsize() == 0


async def test_a_poll_taken_one_at_a_time_keeps_the_count() -> None:
    queue = RecordQueue(maxsize=5)
    await queue.put_many(whole("a", 4))
    queue.put_nowait(Sample("b.r0", 1.0, 0.0))
    assert queue.qsize() == 5 and queue.full()
    item = queue.get_nowait()
    assert isinstance(item, Poll) and queue.qsize() == 1
