"""Issue 13: members of an ISA-18.2 area flood still active when its incident closes get a
ticket of their own, however the flood went.

The issue measured "conditions folded into a flood that are still active after the incident
closes never get a ticket (20 of 30, two days later)". The rule (docs/TICKETS.md, Storms): when
the central system closes an incident, members still active are not forgotten; a new condition
that had no ticket of its own, folded into the incident, and still active, gets one
(`after_incident`); one that cleared does not; nobody gets two. Here through the ticket
service on a real state.db with an injected clock, a restart in the middle: a flood that ended
long before the close, stragglers that arrived after the flood's first window, a second flood
of the area continuing the open incident, and a third one after the incident closed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.core.clock import ManualClock
from gateway.core.records import Finding, Ticket
from gateway.ticketing.policy import AssetProfile
from tests.ticketing.findings import hot
from tests.ticketing.restart import Gateway

T0 = 1_714_521_600.0
HOUR = 3600.0
DAY = 86_400.0
INCIDENT_KEY = "plant-a/hall/alarm.flood/isa18.2-flood"
# One make of machine each: many signatures in one area, the ISA flood (one signature would be
# a storm of its group instead).
ASSETS = {f"m-{n}": AssetProfile(f"m-{n}", f"make-{n}", area="hall") for n in range(40)}


def fault(n: int, ts: float, active: bool = True) -> Finding:
    return hot(ts, active, asset=f"m-{n}", detector="threshold:oil")


def key(n: int) -> str:
    return f"plant-a/m-{n}/threshold.high/threshold:oil"


async def at(gw: Gateway, ts: float) -> None:
    """Let time pass to `ts`, the timers ticking once a minute (hourly after a day)."""
    while gw.clock.now() < ts:
        step = 60.0 if ts - gw.clock.now() < DAY else HOUR
        gw.clock.advance(min(step, ts - gw.clock.now()))
        await gw.service.advance_timers()


async def raise_(gw: Gateway, members: range, start: float, every_s: float) -> None:
    for i, n in enumerate(members):
        await at(gw, start + i * every_s)
        await gw.service.on_finding(fault(n, gw.clock.now()))


async def clear(gw: Gateway, members: range) -> None:
    for n in members:
        await gw.service.on_finding(fault(n, gw.clock.now(), active=False))


def tickets_by_key(path: Path) -> dict[str, list[tuple[str, str | None]]]:
    """Every ticket state.db holds, per dedup key: (id, the incident it came after)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT key, id, json_extract(attributes, '$.after_incident') FROM tickets"
            " ORDER BY opened_at, id"
        ).fetchall()
    found: dict[str, list[tuple[str, str | None]]] = {}
    for k, ticket_id, after in rows:
        found.setdefault(k, []).append((ticket_id, after))
    return found


async def close_incident(gw: Gateway, command_id: str) -> Ticket:
    incident = gw.service.ticket_for(INCIDENT_KEY)
    assert incident is not None
    reply = await gw.command(
        "close", command_id, ticket_id=incident.id, resolution="cooling water restored",
        cause_code="3.4", remedy_code="1",
    )  # fmt: skip
    assert reply.accepted, reply.reason
    return incident


async def test_still_active_members_get_a_ticket_when_the_incident_closes_days_after_the_flood(
    tmp_path: Path,
):
    path = tmp_path / "state.db"
    gw = Gateway(path, ManualClock(T0), ASSETS)
    await gw.boot()
    try:
        # 25 new conditions 10 s apart: the first 10 open tickets, the 11th starts the flood,
        # 15 are folded; 5 stragglers after the flood's first window are folded too: 20 of 30.
        await raise_(gw, range(25), T0, 10)
        await raise_(gw, range(25, 30), T0 + 620, 10)
        assert gw.service.kpis()["floods_active"] == ["hall"]
        await at(gw, T0 + 2 * HOUR)
        assert gw.service.kpis()["floods_active"] == []  # the flood ended; the incident stays
        await clear(gw, range(10, 18))  # 8 of the folded faults clear
        await gw.restart()
        await at(gw, T0 + 2 * DAY)
        incident = await close_incident(gw, "c-close-1")

        found = tickets_by_key(path)
        assert all(len(v) == 1 for v in found.values()), "a key with two tickets"
        after = sorted(k for k, v in found.items() if v[0][1] == incident.id)
        assert after == sorted(key(n) for n in range(18, 30))  # the 12 still active
        assert all(key(n) not in found for n in range(10, 18))  # cleared: nothing to do
        assert all(found[key(n)][0][1] is None for n in range(10))  # their own, from before
        await gw.restart()  # and nothing more on the next start
        await at(gw, T0 + 2 * DAY + HOUR)
        assert tickets_by_key(path) == found
    finally:
        await gw.shutdown()


async def test_two_floods_on_one_open_incident_then_a_third_after_it_closed(tmp_path: Path):
    path = tmp_path / "state.db"
    gw = Gateway(path, ManualClock(T0), ASSETS)
    await gw.boot()
    try:
        await raise_(gw, range(12), T0, 10)  # flood 1: 10 tickets, m-10 and m-11 folded
        await at(gw, T0 + HOUR)
        assert gw.service.kpis()["floods_active"] == []
        await gw.restart()
        # Flood 2 while the incident is still open: 10 more tickets first (no flood yet),
        # then m-22 and m-23 are folded into the same incident (`flood_again`).
        await raise_(gw, range(12, 24), T0 + 2 * HOUR, 10)
        assert gw.service.kpis()["floods_active"] == ["hall"]
        incident = await close_incident(gw, "c-close-1")  # while flood 2 lasts
        found = tickets_by_key(path)
        after = sorted(k for k, v in found.items() if v[-1][1] == incident.id)
        assert after == sorted(key(n) for n in (10, 11, 22, 23))  # both floods' members
        assert all(len(v) == 1 for v in found.values())

        # Flood 3 after the close: a new incident of the area; its own members get tickets
        # at its close, the earlier ones are not ticketed twice.
        await at(gw, T0 + 4 * HOUR)
        await raise_(gw, range(24, 36), T0 + 4 * HOUR, 10)
        await gw.restart()
        second = await close_incident(gw, "c-close-2")
        found = tickets_by_key(path)
        assert all(len(v) == 1 for v in found.values()), "a key with two tickets"
        # The area's incident key was closed within 72 h: the same ticket reopened for it.
        assert second.id == incident.id
        after_second = sorted(
            k for k, v in found.items() if v[-1][1] == second.id and k not in after
        )
        assert after_second == sorted(key(n) for n in (34, 35))
        assert all(found[key(n)][0][1] is None for n in range(24, 34))
    finally:
        await gw.shutdown()


async def test_a_folded_member_that_clears_and_comes_back_after_the_flood_is_one_ticket(
    tmp_path: Path,
):
    """Raised again after the flood ended, it opens its ticket as any new condition; the close
    of the incident does not open another for it."""
    path = tmp_path / "state.db"
    gw = Gateway(path, ManualClock(T0), ASSETS)
    await gw.boot()
    try:
        await raise_(gw, range(12), T0, 10)
        await at(gw, T0 + HOUR)
        await clear(gw, range(11, 12))
        await gw.service.on_finding(fault(11, gw.clock.now() + 1))
        assert gw.service.ticket_for(key(11)) is not None
        await gw.restart()
        incident = await close_incident(gw, "c-close-1")
        found = tickets_by_key(path)
        assert all(len(v) == 1 for v in found.values())
        assert [k for k, v in found.items() if v[0][1] == incident.id] == [key(10)]
    finally:
        await gw.shutdown()
