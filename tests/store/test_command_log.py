"""The command log of state.db, bounded by age and count (gateway/store/command_log.py and
docs/TICKETS.md, "Idempotency window"): a command is remembered for `window_s` after it
arrived, only the newest `max_rows` are kept, pruned at open and every `prune_every` new
entries; a repeat within the window gets the first reply and has no second effect, one
outside it counts as a new command."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.clock import ManualClock
from gateway.core.interfaces import Command
from gateway.store import StateDatabase
from gateway.store.command_log import CommandLogStore
from gateway.store.sqlite import Database, Synchronous
from gateway.store.state_schema import STATE_MIGRATIONS
from gateway.ticketing.commands import TicketCommands
from gateway.ticketing.policy import AssetProfile
from gateway.ticketing.service import TicketService
from tests.ticketing.findings import hot
from tests.ticketing.policies import default_policy
from tests.uplink.helpers import TOPICS
from uplink.events import make_ticket_encoder, source_urn

T0 = 1_714_521_600.0
REPLY = {"accepted": True}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(
        tmp_path / "state.db",
        label="state.db",
        synchronous=Synchronous.FULL,
        busy_timeout_ms=1000,
        migrations=STATE_MIGRATIONS,
    )
    await database.open_reader(1000)
    yield database
    await database.close()


async def remembered(log: CommandLogStore, ids: list[str]) -> list[str]:
    found = await log.recall_commands(ids)
    return [i for i in ids if i in found]


async def test_keeps_the_newest_max_rows_pruning_every_prune_every_entries(db, clock):
    log = CommandLogStore(db, clock, window_s=3600, max_rows=5, prune_every=3)
    ids = [f"c{n}" for n in range(11)]
    for k, command_id in enumerate(ids, start=1):
        await log.remember_command(command_id, "ack", REPLY, clock.now())
        clock.advance(1)
        # The last prune ran after entry 3 * (k // 3) and kept the newest 5 before it; the
        # entries since are all still there.
        last_prune = 3 * (k // 3)
        kept = ids[max(0, last_prune - 5) : k]
        assert await remembered(log, ids) == kept, f"after entry {k}"
        assert await log.count() == len(kept)
    assert log.pruned == 4  # c0 at the 6th entry, c1..c3 at the 9th


async def test_forgets_a_command_once_the_window_has_passed(db, clock):
    log = CommandLogStore(db, clock, window_s=100, max_rows=1000)
    await log.remember_command("old", "ack", REPLY, clock.now())
    clock.advance(60)
    await log.remember_command("new", "ack", REPLY, clock.now())
    clock.advance(40)  # `old` arrived exactly window_s ago: still remembered
    assert await log.recall_command("old") == REPLY
    clock.advance(0.001)
    assert await log.recall_command("old") is None, "outside the window"
    assert await log.recall_command("new") == REPLY
    assert await log.prune(clock.now()) == 1
    assert await remembered(log, ["old", "new"]) == ["new"]
    assert await log.count() == 1


async def test_a_repeat_inside_the_window_keeps_the_first_reply_one_outside_replaces_it(db, clock):
    log = CommandLogStore(db, clock, window_s=100, max_rows=1000)
    await log.remember_command("c-1", "ack", {"accepted": True, "n": 1}, clock.now())
    clock.advance(99)
    await log.remember_command("c-1", "assign", {"accepted": True, "n": 2}, clock.now())
    assert await log.recall_command("c-1") == {"accepted": True, "n": 1}
    clock.advance(2)  # 101 s after the first: that entry fell out of the window
    await log.remember_command("c-1", "assign", {"accepted": True, "n": 3}, clock.now())
    assert await log.recall_command("c-1") == {"accepted": True, "n": 3}
    assert await log.count() == 1


async def test_commands_remembered_together_take_one_write_and_keep_first_replies(db, clock):
    log = CommandLogStore(db, clock, window_s=100, max_rows=1000)
    await log.remember_command("c-1", "ack", {"accepted": True, "n": 1}, clock.now())
    clock.advance(1)
    units = log._writer.stats.units

    await log.remember_commands(
        [("c-1", "ack", {"accepted": True, "n": 2}), ("c-2", "ack", {"accepted": False})],
        clock.now(),
    )

    assert log._writer.stats.units == units + 1
    assert await log.recall_commands(["c-1", "c-2"]) == {
        "c-1": {"accepted": True, "n": 1},  # inside the window: the first reply stands
        "c-2": {"accepted": False},
    }
    await log.remember_commands([], clock.now())
    assert log._writer.stats.units == units + 1


async def test_state_db_prunes_its_command_log_by_age_and_count_at_open(tmp_path, clock):
    path = tmp_path / "state.db"
    store = await StateDatabase.open(path, clock=clock, command_window_s=3600)
    try:
        for n in range(150):  # fewer than one prune period: nothing pruned while running
            await store.commands.remember_command(f"c{n}", "ack", REPLY, clock.now())
            clock.advance(10)  # c0 at T0 .. c149 at T0 + 1490
        assert await store.commands.count() == 150
    finally:
        await store.close()
    # Reopened with a smaller cap: only the newest 100 are left.
    store = await StateDatabase.open(path, clock=clock, command_window_s=3600, command_log_max=100)
    try:
        assert await store.commands.count() == 100
        assert await remembered(store.commands, ["c49", "c50", "c149"]) == ["c50", "c149"]
    finally:
        await store.close()
    # Reopened later: what arrived more than an hour before is gone at once.
    clock.advance(T0 + 4600 - clock.now())  # whatever came before T0 + 1000 is too old
    store = await StateDatabase.open(path, clock=clock, command_window_s=3600)
    try:
        assert await store.commands.count() == 50  # c100 (T0 + 1000) .. c149
        assert await remembered(store.commands, ["c99", "c100"]) == ["c100"]
    finally:
        await store.close()


async def test_a_command_repeated_inside_the_window_is_replayed_and_outside_judged_anew(
    tmp_path, clock
):
    store = await StateDatabase.open(tmp_path / "state.db", clock=clock, command_window_s=3600)
    try:
        encode = make_ticket_encoder(TOPICS, source_urn("s", "g"), store.outbox.next_sequence)
        assets = {"pump-1": AssetProfile("pump-1", "pump", area="a", tags=("pump-1.temp",))}
        service = TicketService(
            "plant-a", "gw-1", store, encode, clock, assets=assets, policy=default_policy()
        )
        commands = TicketCommands(service, store.outbox, store.commands, clock)
        await service.start()
        await service.on_finding(hot(clock.now()))
        [ticket] = service.open_tickets()
        body = {"command_id": "c-close", "actor": "cmms", "ticket_id": ticket.id,
                "cancel_reason": "false alarm"}  # fmt: skip
        close = Command("close", "c-close", body)

        first = await commands.handle(close)
        assert first.accepted and not first.detail.get("replayed")
        depth = await store.outbox.depth()
        clock.advance(3599)
        again = await commands.handle(close)  # the central system retrying a lost reply
        assert again.accepted and again.detail["replayed"] is True
        assert await store.outbox.depth() == depth, "a replay has no second effect"
        clock.advance(2)  # the first one arrived 3601 s ago
        late = await commands.handle(close)
        assert not late.accepted, "judged anew: the ticket is closed already"
        assert not late.detail.get("replayed")
    finally:
        await store.close()
