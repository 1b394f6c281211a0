"""A flood in progress and chattering conditions survive a restart (issue 5): kept in state.db
by the journal and restored by `TicketService.start()`, against the real StateDatabase."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.records import Finding
from gateway.ticketing.noise import ConditionFlag
from gateway.ticketing.policy import AssetProfile
from tests.ticketing.findings import hot
from tests.ticketing.restart import Gateway

T0 = 1_714_521_600.0
PRESSES = [f"press-{n}" for n in range(1, 16)]
ASSETS = {
    "pump-1": AssetProfile("pump-1", "pump", area="utilities"),
    # One make of machine each: an ISA flood of many signatures in one area (one signature
    # in a burst is a storm of its group, issue 13, see tests/test_storm_grouping.py).
    **{p: AssetProfile(p, f"{p}-make", area="hall") for p in PRESSES},
}
INCIDENT_KEY = "plant-a/hall/alarm.flood/isa18.2-flood"


def oil_hot(asset: str, ts: float, active: bool = True) -> Finding:
    return hot(ts, active, asset=asset, detector="threshold:oil")


def key_of(asset: str) -> str:
    return f"plant-a/{asset}/threshold.high/threshold:oil"


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as raw:
        (count,) = raw.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(count)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(tmp_path / "state.db", ManualClock(T0), ASSETS)
    await gw.boot()
    yield gw
    await gw.shutdown()


async def start_flood(gw: Gateway, presses: int) -> None:
    """`presses` new conditions in the hall, 10 s apart: the 11th starts the flood."""
    for n, press in enumerate(PRESSES[:presses]):
        gw.clock.advance(10)
        await gw.service.on_finding(oil_hot(press, T0 + 10 * (n + 1)))


async def test_a_flood_in_progress_survives_a_restart_and_the_next_condition_joins_it(
    gateway: Gateway,
):
    await start_flood(gateway, 12)
    incident = gateway.service.ticket_for(INCIDENT_KEY)
    assert incident is not None
    assert len(gateway.service.open_tickets()) == 11  # 10 before the threshold + the incident
    assert rows(gateway.path, "area_floods") == 1  # written before on_finding returned

    await gateway.restart()
    assert gateway.service.kpis()["floods_active"] == ["hall"]
    await gateway.service.advance_timers()  # the arrivals came back too: still a flood
    assert gateway.service.kpis()["floods_active"] == ["hall"]
    assert gateway.service.kpis()["conditions_per_10min"] == {"hall": 12}

    gateway.clock.advance(10)
    await gateway.service.on_finding(oil_hot("press-13", gateway.clock.now()))
    await gateway.service.on_finding(oil_hot("press-11", gateway.clock.now()))  # folded: re-raise
    assert gateway.service.ticket_for(key_of("press-13")) is None
    assert gateway.service.ticket_for(key_of("press-11")) is None
    assert len(gateway.service.open_tickets()) == 11

    gateway.clock.advance(700)  # quiet for longer than the window: the flood ends
    await gateway.service.advance_timers()
    assert gateway.service.kpis()["floods_active"] == []
    ended = (await gateway.db.tickets.ticket_events(incident.id))[-1]
    assert ended.detail["reason"] == "flood_ended"
    assert ended.detail["member_count"] == 13  # 12 before the restart, press-13 after
    assert rows(gateway.path, "area_floods") == 0


async def test_a_flood_opened_again_after_a_restart_without_its_arrivals_would_split(
    gateway: Gateway,
):
    """The control: what the restored arrivals prevent. A flood whose window was lost ends at
    the first tick, and the next condition of the area opens a ticket of its own."""
    await start_flood(gateway, 12)
    await gateway.service.advance_timers()  # the tick saves the arrivals
    assert rows(gateway.path, "flood_arrivals") == 12
    await gateway.shutdown()
    with sqlite3.connect(gateway.path) as raw:
        raw.execute("DELETE FROM flood_arrivals")
    await gateway.boot()

    gateway.clock.advance(600)  # the flood lasted a window; nothing counted in it now
    await gateway.service.advance_timers()
    assert gateway.service.kpis()["floods_active"] == []
    await gateway.service.on_finding(oil_hot("press-13", gateway.clock.now()))
    assert gateway.service.ticket_for(key_of("press-13")) is not None


async def test_a_flood_that_calmed_down_while_down_ends_at_the_first_tick(gateway: Gateway):
    await start_flood(gateway, 11)
    incident = gateway.service.ticket_for(INCIDENT_KEY)
    assert incident is not None
    await gateway.shutdown()
    gateway.clock.advance(1200)
    await gateway.boot()
    assert gateway.service.kpis()["floods_active"] == ["hall"]

    await gateway.service.advance_timers()
    assert gateway.service.kpis()["floods_active"] == []
    assert (await gateway.kinds(incident.id))[-1] == "updated"
    assert rows(gateway.path, "area_floods") == 0
    await gateway.service.on_finding(oil_hot("press-12", gateway.clock.now()))
    assert gateway.service.ticket_for(key_of("press-12")) is not None  # no flood: own ticket


async def chatter(gw: Gateway, cycles: int) -> None:
    """`cycles` raise/clear cycles of pump-1, 10 s apart."""
    for _ in range(cycles):
        gw.clock.advance(10)
        now = gw.clock.now()
        await gw.service.on_finding(oil_hot("pump-1", now))
        await gw.service.on_finding(oil_hot("pump-1", now + 1, active=False))


async def test_chattering_survives_a_restart_and_still_withholds_clears(gateway: Gateway):
    key = key_of("pump-1")
    await chatter(gateway, 3)
    assert ConditionFlag.CHATTERING in gateway.service.flags(key)
    ticket = gateway.service.ticket_for(key)
    assert ticket is not None
    before = await gateway.kinds(ticket.id)
    assert before == ["opened", "condition_cleared", "updated", "condition_cleared"]
    assert rows(gateway.path, "chattering_conditions") == 1

    await gateway.restart()
    assert ConditionFlag.CHATTERING in gateway.service.flags(key)
    assert gateway.service.kpis()["chattering"] == 1
    await chatter(gateway, 2)  # still chattering: counted quietly, no message
    assert await gateway.kinds(ticket.id) == before
    # 2 reported before the restart + 2 quiet after; the quiet third before the restart was
    # only in memory (quiet counts travel with the next reported change, and there was none).
    assert gateway.service.ticket_for(key).occurrences == 4  # type: ignore[union-attr]
    assert gateway.service.advisories() == []  # the advisory was raised once, before

    gateway.clock.advance(61)  # no raise for a whole chatter window
    await gateway.service.advance_timers()
    assert ConditionFlag.CHATTERING not in gateway.service.flags(key)
    assert (await gateway.kinds(ticket.id))[-1] == "condition_cleared"  # the withheld clear
    assert rows(gateway.path, "chattering_conditions") == 0


async def test_two_raises_before_a_restart_do_not_make_chatter_with_one_after(gateway: Gateway):
    """Only CHATTERING conditions are kept: a condition on its way to chatter counts afresh."""
    key = key_of("pump-1")
    await chatter(gateway, 2)
    await gateway.restart()
    await chatter(gateway, 1)
    assert ConditionFlag.CHATTERING not in gateway.service.flags(key)
    assert rows(gateway.path, "chattering_conditions") == 0
