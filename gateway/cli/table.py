"""Plain-text tables and timestamps for the commands an engineer reads at a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime


def iso_time(ts: float | None, *, date: bool = True) -> str:
    """UTC with milliseconds: `2026-05-04T10:15:02.125Z` (or `10:15:02.125Z`); `-` for None."""
    if ts is None:
        return "-"
    moment = datetime.fromtimestamp(ts, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S" if date else "%H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}Z"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, a rule under the headers, no trailing spaces."""
    table = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
