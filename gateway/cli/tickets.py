"""`edge-gateway tickets`: the tickets this gateway knows, as a table or as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.core.exit_codes import EX_CONFIG, EX_NOINPUT
from gateway.core.records import Ticket

COLUMNS = ("id", "asset", "fault", "priority", "state", "opened", "occurrences")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ticket_row(ticket: Ticket) -> tuple[str, ...]:
    return (
        ticket.id,
        ticket.asset,
        ticket.fault_code,
        ticket.priority.value,
        ticket.state.value + ("" if ticket.condition_active else " (cleared)"),
        _when(ticket.opened_at),
        str(ticket.occurrences),
    )


def format_table(tickets: list[Ticket]) -> str:
    rows = [COLUMNS, *(ticket_row(t) for t in tickets)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ticket_json(ticket: Ticket) -> dict[str, object]:
    return {
        "id": ticket.id,
        "key": ticket.key,
        "asset": ticket.asset,
        "fault_code": ticket.fault_code,
        "detector": ticket.detector,
        "priority": ticket.priority.value,
        "state": ticket.state.value,
        "revision": ticket.revision,
        "opened_at": _when(ticket.opened_at),
        "last_seen": _when(ticket.last_seen),
        "occurrences": ticket.occurrences,
        "peak_value": ticket.peak_value,
        "condition_active": ticket.condition_active,
        "central_id": ticket.central_id,
        "message": ticket.message,
    }


def find_state_db(args: argparse.Namespace) -> tuple[Path, str]:
    """state.db, and what to say when it is missing."""
    if args.db:
        return Path(args.db), f"no state database at {args.db}"
    from gateway.config.loader import load_config

    location = load_config(args.config or ".").state_location()
    return location.path / "state.db", location.missing("state.db")


async def _read(db: Path) -> list[Ticket]:
    from gateway.store import StateDatabase

    store = await StateDatabase.open(db, read_only=True)
    try:
        return await store.tickets.list_tickets()
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    try:
        db, missing = find_state_db(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_CONFIG
    if not db.exists():
        print(f"tickets: {missing}", file=sys.stderr)
        return EX_NOINPUT
    tickets = asyncio.run(_read(db))
    if args.json:
        print(json.dumps([ticket_json(t) for t in tickets], indent=2))
    elif tickets:
        print(format_table(tickets))
    else:
        print("No tickets.")
    return 0
