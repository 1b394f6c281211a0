"""Issue 13 item 6: the timer tick looks only at what is due. The deadline queue on its own,
then the ticket service with 1000 open tickets on a real state.db: a tick with nothing due
examines no entry, and each due step fires once, at its time."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gateway.core.clock import ManualClock
from gateway.core.records import Finding, Priority
from gateway.store import StateDatabase
from gateway.ticketing import TicketService
from gateway.ticketing.deadlines import COMPACT_FLOOR, DeadlineQueue, run_due
from gateway.ticketing.policy import AssetProfile
from tests.ticketing.findings import hot
from tests.ticketing.policies import default_policy
from tests.ticketing.test_service import Encoder

T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z
TICKETS = 1000

# --- the queue --------------------------------------------------------------------------------


def test_a_key_is_due_once_at_its_deadline():
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.schedule("a", 10.0)
    queue.schedule("b", 5.0)
    assert queue.pop_due(4.9) == []
    assert queue.examined == 0  # nothing due: nothing taken off the heap
    assert queue.pop_due(10.0) == ["b", "a"]  # earliest first
    assert queue.pop_due(1e9) == []  # once
    assert len(queue) == 0


def test_a_moved_deadline_fires_at_the_new_time_only():
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.schedule("a", 10.0)
    queue.schedule("a", 20.0)  # later: the entry at 10 is stale
    assert queue.pop_due(15.0) == []
    assert queue.examined == 1  # the stale entry, skipped
    queue.schedule("a", 12.0)  # earlier again
    assert queue.pop_due(12.0) == ["a"]
    assert queue.pop_due(30.0) == []  # the entry at 20 is stale too


def test_a_cancelled_key_never_fires_and_a_new_deadline_after_it_does():
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.schedule("a", 10.0)
    queue.cancel("a")
    assert queue.pop_due(10.0) == []
    queue.schedule("a", 10.0)  # the same time as the cancelled entry: still once
    queue.schedule("a", None)  # None is a cancel
    queue.schedule("a", 10.0)
    assert queue.pop_due(10.0) == ["a"]
    assert queue.pop_due(10.0) == []


def test_ties_keep_the_order_of_scheduling():
    queue: DeadlineQueue[str] = DeadlineQueue()
    for key in ("c", "a", "b"):
        queue.schedule(key, 7.0)
    assert queue.pop_due(7.0) == ["c", "a", "b"]


def test_moving_deadlines_again_and_again_keeps_the_heap_bounded():
    queue: DeadlineQueue[int] = DeadlineQueue()
    for round_ in range(20):
        for key in range(1000):
            queue.schedule(key, 100.0 + round_)
    # 20 000 pushes for 1000 live keys: stale entries are dropped now and then.
    assert len(queue._heap) <= 2 * 1000 + COMPACT_FLOOR + 1
    assert sorted(queue.pop_due(1e9)) == list(range(1000))


async def test_work_that_fails_leaves_the_key_and_the_rest_due_for_the_next_tick():
    queue: DeadlineQueue[str] = DeadlineQueue()
    for key, due in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        queue.schedule(key, due)
    done: list[str] = []

    async def work(key: str, now: float) -> None:
        if key == "b":
            raise OSError("state.db refused")
        done.append(key)

    with pytest.raises(OSError):
        await run_due(queue, 5.0, work)
    assert done == ["a"]
    assert sorted(queue.pop_due(5.0)) == ["b", "c"]


# --- the service ------------------------------------------------------------------------------


@pytest.fixture
async def service(tmp_path):
    """1000 open P1 tickets, each of its own asset class and area (no group, no flood)."""
    clock = ManualClock(T0)
    store = await StateDatabase.open(tmp_path / "state.db", clock=clock)
    encoder = Encoder()
    assets = {
        f"m-{n}": AssetProfile(f"m-{n}", f"class-{n}", area=f"area-{n}") for n in range(TICKETS)
    }
    service = TicketService(
        "plant1", "edge1", store, encoder, clock, policy=default_policy(), assets=assets
    )
    await service.start()
    await service.on_findings([_finding(n, T0) for n in range(TICKETS)])
    assert len(service.open_tickets()) == TICKETS
    service.clock = clock  # type: ignore[attr-defined]
    service.store = store  # type: ignore[attr-defined]
    yield service
    await store.close()


def _finding(n: int, ts: float) -> Finding:
    return replace(hot(ts, asset=f"m-{n}", detector="threshold:oil"), severity=Priority.P1)


def _examined(service: TicketService) -> int:
    ledger = service._ledger
    queues = (
        ledger.delay_ends,
        ledger.stale_at,
        ledger.escalation_at,
        ledger.shelve_ends,
        ledger.maintenance_ends,
        ledger.outcomes.eradication_at,
    )
    return sum(q.examined for q in queues)


async def _events(service: TicketService, kind: str) -> list[dict]:
    store = service.store  # type: ignore[attr-defined]
    rows = await store.outbox.unsettled(100_000)
    return [json.loads(m.payload) for m in rows if json.loads(m.payload)["kind"] == kind]


async def test_a_tick_with_nothing_due_examines_nothing_however_many_tickets_are_open(service):
    clock = service.clock
    policy = service.policy
    sla = policy.sla_for(Priority.P1)
    # The first step of a P1 ticket: the response warning, when `warn_before` of it is left.
    warn_at = T0 + sla.respond_s * (1.0 - sla.warn_before)
    before = _examined(service)
    for _ in range(5):  # five ticks, well before anything is due
        clock.advance(1.0)
        await service.advance_timers()
    assert clock.now() < warn_at
    assert _examined(service) - before == 0


async def test_each_due_step_fires_once_at_its_time(service):
    clock = service.clock
    sla = service.policy.sla_for(Priority.P1)
    warn_at = T0 + sla.respond_s * (1.0 - sla.warn_before)
    clock.advance(warn_at - 1.0 - clock.now())
    await service.advance_timers()
    assert await _events(service, "sla_warning") == []
    before = _examined(service)
    clock.advance(1.0)  # the warning of every ticket is due now
    await service.advance_timers()
    warned = await _events(service, "sla_warning")
    assert sorted(e["ticket"] for e in warned) == sorted(t.id for t in service.open_tickets())
    assert _examined(service) - before == TICKETS  # one entry each, none stale
    before = _examined(service)
    clock.advance(1.0)  # nothing more until the breach at the deadline
    await service.advance_timers()
    assert len(await _events(service, "sla_warning")) == TICKETS
    assert _examined(service) - before == 0


async def test_a_person_accepting_moves_the_deadline_and_nothing_fires_for_that_ticket(service):
    clock = service.clock
    sla = service.policy.sla_for(Priority.P1)
    warn_at = T0 + sla.respond_s * (1.0 - sla.warn_before)
    accepted = service.open_tickets()[0]
    await service.accept(accepted, None, clock.now(), "alice")
    clock.advance(warn_at - clock.now())
    await service.advance_timers()
    warned = {e["ticket"] for e in await _events(service, "sla_warning")}
    # The resolution clock's warning comes later; the response clock stopped at the accept.
    assert accepted.id not in warned
    assert len(warned) == TICKETS - 1


async def test_conditions_turn_stale_once_after_stale_after_s(service):
    clock = service.clock
    stale_at = T0 + service.policy.stale_after_s
    ledger = service._ledger
    clock.advance(stale_at - 1.0 - clock.now())
    await service.advance_timers()  # the escalation steps that came due meanwhile
    assert await _events(service, "condition_stale") == []
    before = ledger.stale_at.examined
    clock.advance(1.0)
    await service.advance_timers()
    assert len(await _events(service, "condition_stale")) == TICKETS
    assert ledger.stale_at.examined - before == TICKETS
    clock.advance(1.0)
    await service.advance_timers()
    assert len(await _events(service, "condition_stale")) == TICKETS
    assert ledger.stale_at.examined - before == TICKETS


async def test_after_a_restart_the_queues_are_rebuilt_from_state_db(service):
    clock = service.clock
    sla = service.policy.sla_for(Priority.P1)
    warn_at = T0 + sla.respond_s * (1.0 - sla.warn_before)
    clock.advance(60.0)
    restarted = TicketService(
        "plant1",
        "edge1",
        service.store,
        service._ledger.encode,  # its event ids go on from the first run's
        clock,
        policy=service.policy,
        assets=service._ledger.assets,
    )
    await restarted.start()
    restarted.store = service.store  # type: ignore[attr-defined]
    clock.advance(1.0)
    await restarted.advance_timers()
    assert _examined(restarted) == 0  # rebuilt: nothing due yet
    clock.advance(warn_at - clock.now())
    await restarted.advance_timers()
    assert len(await _events(restarted, "sla_warning")) == TICKETS
    assert _examined(restarted) == TICKETS
