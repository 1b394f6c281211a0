"""Shelving and maintenance mode survive a restart (issue 5): the operator's decisions are kept
in state.db and restored by `TicketService.start()`, against the real StateDatabase."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.records import TicketState
from gateway.store.sqlite import Database, Synchronous
from gateway.store.state_schema import STATE_MIGRATIONS
from gateway.ticketing.noise import ConditionFlag
from gateway.ticketing.policy import AssetProfile
from tests.ticketing.findings import hot
from tests.ticketing.restart import Gateway as RestartableGateway

T0 = 1_714_521_600.0
HOUR = 3600.0
ASSETS = {"pump-1": AssetProfile("pump-1", "pump", area="utilities")}
KEY = "plant-a/pump-1/threshold.high/threshold:hot"


class Gateway(RestartableGateway):
    def __init__(self, path: Path, clock: ManualClock) -> None:
        super().__init__(path, clock, ASSETS)

    async def raise_and_clear(self, offset: float) -> None:
        """One more episode of the fault: raised, then cleared a second later."""
        now = self.clock.now()
        await self.service.on_finding(hot(now + offset))
        await self.service.on_finding(hot(now + offset + 1, active=False))


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(tmp_path / "state.db", ManualClock(T0))
    await gw.boot()
    yield gw
    await gw.shutdown()


async def open_ticket(gw: Gateway) -> str:
    await gw.service.on_finding(hot(gw.clock.now()))
    (ticket,) = gw.service.open_tickets()
    await gw.service.on_finding(hot(gw.clock.now() + 1, active=False))
    return ticket.id


async def test_a_timed_shelve_holds_across_a_restart_and_still_expires(gateway: Gateway):
    ticket_id = await open_ticket(gateway)
    reply = await gateway.command(
        "shelve", "c-1", ticket_id=ticket_id, reason="parts", duration_s=2 * HOUR
    )
    assert reply.accepted
    gateway.clock.advance(HOUR)
    await gateway.restart()

    assert ConditionFlag.SHELVED in gateway.service.flags(KEY)
    assert gateway.service.kpis()["shelved"] == 1
    await gateway.raise_and_clear(1)
    assert gateway.service.statistics().shelved_hits == 1
    # The raise while shelved is not reported (unshelved, it would be an `updated` event).
    assert (await gateway.kinds(ticket_id))[-1] == "shelved"

    gateway.clock.advance(HOUR - 10)
    await gateway.service.advance_timers()
    assert ConditionFlag.SHELVED in gateway.service.flags(KEY)  # not yet: 10 s to go
    gateway.clock.advance(20)
    await gateway.service.advance_timers()
    assert ConditionFlag.SHELVED not in gateway.service.flags(KEY)
    unshelved = (await gateway.db.tickets.ticket_events(ticket_id))[-1]
    assert (unshelved.kind, unshelved.detail["by"]) == ("unshelved", "timer")

    # The expiry was persisted with its event: a second restart does not shelve it again.
    await gateway.restart()
    assert gateway.service.flags(KEY) == frozenset()
    await gateway.raise_and_clear(1)
    assert gateway.service.statistics().shelved_hits == 0
    assert (await gateway.kinds(ticket_id))[-2] == "updated"


async def test_a_shelve_that_ran_out_while_down_ends_at_start_with_its_event(gateway: Gateway):
    ticket_id = await open_ticket(gateway)
    await gateway.command("shelve", "c-1", ticket_id=ticket_id, reason="parts", duration_s=HOUR)
    await gateway.shutdown()
    gateway.clock.advance(HOUR + 5)
    await gateway.boot()

    assert gateway.service.flags(KEY) == frozenset()
    ticket = gateway.service.open_tickets()[0]
    assert "shelved" not in ticket.attributes
    events = await gateway.db.tickets.ticket_events(ticket_id)
    assert (events[-1].kind, events[-1].ts) == ("unshelved", T0 + HOUR + 5)
    with sqlite3.connect(gateway.path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM shelved_conditions").fetchone() == (0,)


async def test_a_one_shot_shelve_holds_across_a_restart_until_the_condition_clears(
    gateway: Gateway,
):
    ticket_id = await open_ticket(gateway)
    reply = await gateway.command(
        "shelve", "c-1", ticket_id=ticket_id, reason="known", one_shot=True
    )
    assert reply.accepted
    gateway.clock.advance(12 * HOUR)  # longer than any timed shelve: one-shot has no end time
    await gateway.restart()
    assert ConditionFlag.SHELVED in gateway.service.flags(KEY)

    await gateway.raise_and_clear(1)
    assert gateway.service.statistics().shelved_hits == 1
    assert (await gateway.kinds(ticket_id))[-1] == "unshelved"
    await gateway.restart()
    assert gateway.service.flags(KEY) == frozenset()


async def test_unshelve_and_close_forget_the_shelve_in_state_db(gateway: Gateway):
    ticket_id = await open_ticket(gateway)
    await gateway.command("shelve", "c-1", ticket_id=ticket_id, reason="r", duration_s=HOUR)
    assert (await gateway.command("unshelve", "c-2", ticket_id=ticket_id)).accepted
    await gateway.restart()
    assert gateway.service.flags(KEY) == frozenset()

    await gateway.command("shelve", "c-3", ticket_id=ticket_id, reason="r", duration_s=HOUR)
    assert (
        await gateway.command(
            "close",
            "c-4",
            ticket_id=ticket_id,
            resolution="done",
            cause_code="3.4",
            remedy_code="2",
        )
    ).accepted
    await gateway.restart()
    assert gateway.service.flags(KEY) == frozenset()
    with sqlite3.connect(gateway.path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM shelved_conditions").fetchone() == (0,)


async def test_maintenance_mode_survives_a_restart_and_ends_at_until(gateway: Gateway):
    until = T0 + 2 * HOUR
    reply = await gateway.command("maintenance", "c-1", asset="pump-1", until=until)
    assert reply.accepted
    gateway.clock.advance(HOUR)
    await gateway.restart()

    assert gateway.service.in_maintenance("pump-1") == until
    await gateway.service.on_finding(hot(gateway.clock.now()))
    assert gateway.service.open_tickets() == []
    assert ConditionFlag.OUT_OF_SERVICE in gateway.service.flags(KEY)
    assert gateway.service.statistics().suppressed == 1

    gateway.clock.advance(HOUR)  # exactly `until`: maintenance is over
    await gateway.service.advance_timers()
    assert gateway.service.in_maintenance("pump-1") is None
    with sqlite3.connect(gateway.path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM asset_maintenance").fetchone() == (0,)
    await gateway.service.on_finding(hot(gateway.clock.now() + 1))
    (ticket,) = gateway.service.open_tickets()
    assert ticket.state is TicketState.OPENED


async def test_a_maintenance_window_that_ended_while_down_is_dropped_at_load(gateway: Gateway):
    await gateway.command("maintenance", "c-1", asset="pump-1", until=T0 + HOUR)
    await gateway.command("maintenance", "c-2", asset="pump-1", until=T0 + 3 * HOUR)  # moved
    await gateway.shutdown()
    gateway.clock.advance(2 * HOUR)
    await gateway.boot()
    assert gateway.service.in_maintenance("pump-1") == T0 + 3 * HOUR  # the later end holds

    await gateway.shutdown()
    gateway.clock.advance(2 * HOUR)
    await gateway.boot()
    assert gateway.service.in_maintenance("pump-1") is None
    with sqlite3.connect(gateway.path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM asset_maintenance").fetchone() == (0,)


async def test_a_schema_version_2_database_migrates_and_keeps_its_tickets(tmp_path: Path):
    path = tmp_path / "state.db"
    clock = ManualClock(T0)
    old = await Database.open(
        path,
        label="state.db",
        synchronous=Synchronous.FULL,
        busy_timeout_ms=5000,
        migrations=STATE_MIGRATIONS[:2],
        read_only=False,
    )
    await old.close()
    gw = Gateway(path, clock)
    await gw.boot()  # migrates 2 -> latest
    try:
        ticket_id = await open_ticket(gw)
        await gw.command("shelve", "c-1", ticket_id=ticket_id, reason="r", duration_s=HOUR)
        await gw.command("maintenance", "c-2", asset="pump-1", until=T0 + HOUR)
        await gw.restart()
        assert ConditionFlag.SHELVED in gw.service.flags(KEY)
        assert gw.service.in_maintenance("pump-1") == T0 + HOUR
        assert [t.id for t in gw.service.open_tickets()] == [ticket_id]
    finally:
        await gw.shutdown()
    with sqlite3.connect(path) as raw:
        versions = [v for (v,) in raw.execute("SELECT version FROM schema_version")]
        assert max(versions) == STATE_MIGRATIONS[-1].version >= 3
