"""SIGKILL in the middle of group commits (issue 17 item 5): a real process commits ticket
changes in bursts (several per transaction) while its uplink publishes them to a real
mosquitto; a subscriber to `#` records what reached the wire. Killed at random moments,
state.db must hold every change the process had reported committed, each whole (ticket, event
and message together, or none of them), and nothing may have been on the wire that state.db
does not hold ("committed before published")."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.faults.support import watching_everything
from tests.support.broker import MosquittoBroker
from tests.support.site import REPO

pytestmark = [pytest.mark.broker, pytest.mark.slow]

KILLS = 4


async def run_until_killed(path: Path, port: int, first: int, acked: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.group_commit_writer", str(path), str(port),
        str(first), cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        # Let it commit a while (bursts keep coming), then kill it at a random moment.
        before = len(acked)
        async with asyncio.timeout(60):
            while len(acked) < before + 40:
                line = await process.stdout.readline()
                assert line, "the writer stopped on its own"
                acked.append(line.decode().split()[1])
        await asyncio.sleep(random.uniform(0.0, 0.05))
    finally:
        process.send_signal(signal.SIGKILL)
        rest, _ = await process.communicate()
    acked.extend(line.split()[1] for line in rest.decode().splitlines() if line)


def stored(path: Path) -> tuple[set[str], set[str], set[str], str]:
    conn = sqlite3.connect(path)
    try:
        messages = {
            row[0]: row[1] for row in conn.execute("SELECT event_id, ticket_id FROM outbox")
        }
        tickets = {row[0] for row in conn.execute("SELECT id FROM tickets")}
        events = {row[0] for row in conn.execute("SELECT ticket_id FROM ticket_events")}
        whole = {e for e, t in messages.items() if t in tickets and t in events}
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return set(messages), whole, tickets ^ events, integrity
    finally:
        conn.close()


async def test_sigkill_during_group_commits_loses_no_acked_change_and_leaks_nothing(tmp_path):
    path = tmp_path / "state.db"
    acked: list[str] = []
    with MosquittoBroker() as broker:
        async with watching_everything(broker.port) as watcher:
            for kill in range(KILLS):
                await run_until_killed(path, broker.port, 1 + kill * 100_000, acked)
                messages, whole, torn, integrity = stored(path)
                assert integrity == "ok"
                assert torn == set(), "a ticket without its event, or the reverse"
                assert messages == whole, "a message without its ticket and event"
                assert set(acked) <= messages, "a change reported committed was lost"
                on_wire = {
                    json.loads(m.payload)["id"] for m in watcher.seen if "/tickets/" in m.topic
                }
                assert on_wire <= messages, "a message was published before it was committed"
            assert watcher.problems() == []
    assert len(acked) >= KILLS * 40
    assert on_wire, "the uplink published during the test"
