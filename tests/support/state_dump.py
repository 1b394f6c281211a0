"""The whole content of a state.db file, read from outside through its own connection: what
"changes nothing" means in the tests (every row of every table, before and after)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

StateDump = dict[str, list[tuple[Any, ...]]]


def dump_state(path: Path) -> StateDump:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in tables
        }
