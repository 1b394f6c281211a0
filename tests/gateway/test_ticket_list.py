from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from gateway.cli import tickets
from gateway.core.interfaces import NewMessage, TicketEvent
from gateway.core.records import OutboxKind, Priority, Ticket, TicketState
from gateway.store import StateDatabase


def a_ticket(**changes: object) -> Ticket:
    fields: dict[str, object] = dict(
        id="T-plant-a-edge-01-20261122-0001", key="plant-a/pump-1/threshold.high/r",
        site="plant-a", asset="pump-1", fault_code="threshold.high", detector="r",
        priority=Priority.P2, state=TicketState.OPENED, revision=1, opened_at=1_795_000_000.0,
        first_seen=1_795_000_000.0, last_seen=1_795_000_100.0, occurrences=3, peak_value=88.5,
        message="Bearing temperature 88.5 degC above 80 degC.",
    )
    fields.update(changes)
    return Ticket(**fields)  # type: ignore[arg-type]


async def store_with(tmp_path: Path, ticket: Ticket) -> Path:
    db = tmp_path / "state.db"
    store = await StateDatabase.open(db)
    event = TicketEvent(ticket.id, ticket.revision, "opened", ticket.opened_at)
    message = NewMessage("e1", "t/opened", b"{}", OutboxKind.TICKET, ticket.id)
    await store.tickets.commit_ticket_change(ticket, [event], [message])
    await store.close()
    return db


async def test_lists_tickets_as_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    db = await store_with(tmp_path, a_ticket())
    args = argparse.Namespace(db=str(db), config=None, json=False)
    assert await asyncio.to_thread(tickets.run, args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == list(tickets.COLUMNS)
    assert out[2].split() == [
        "T-plant-a-edge-01-20261122-0001", "pump-1", "threshold.high", "P2", "OPENED",
        "2026-11-18", "11:06:40Z", "3",
    ]


async def test_lists_tickets_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    db = await store_with(tmp_path, a_ticket())
    args = argparse.Namespace(db=str(db), config=None, json=True)
    assert await asyncio.to_thread(tickets.run, args) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["asset"], row["occurrences"], row["peak_value"]) == ("pump-1", 3, 88.5)


def test_missing_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = argparse.Namespace(db=str(tmp_path / "none.db"), config=None, json=False)
    assert tickets.run(args) == tickets.EX_NOINPUT
    assert "no state database" in capsys.readouterr().err
