"""`edge-gateway values`: raw samples read back from telemetry.db, as a table or as CSV.

telemetry.db packs one poll of a device into one row (gateway/store/sample_groups.py), which
`sqlite3` cannot show; this decodes it, newest `--limit` samples of the window, oldest first,
with quality and reason. Read-only beside the running daemon. Exit 0 (also when the window is
empty, said on stderr), 64 for a bad option, 66 when there is no telemetry.db, 78 for a
configuration that does not load.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.cli.table import format_table, iso_time
from gateway.core.errors import ConfigError, StoreError
from gateway.core.exit_codes import EX_CONFIG, EX_NOINPUT, EX_OK, EX_USAGE
from gateway.core.records import Sample

if TYPE_CHECKING:
    from gateway.config.loader import LoadedConfig

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
CSV_COLUMNS = ("time", "ts", "device", "point", "value", "unit", "quality", "reason",
               "source_time")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", help="gateway.yaml or its folder (finds telemetry.db, units)")
    where.add_argument("--db", help="path of telemetry.db")
    parser.add_argument("--device", help="only this device id")
    parser.add_argument(
        "--since", default="10m", metavar="DURATION",
        help="how far back: 90s, 10m, 2h, 1d, 1h30m (default 10m)",
    )  # fmt: skip
    parser.add_argument(
        "--limit", type=int, default=2000, help="at most this many samples, the newest"
    )
    parser.add_argument("--csv", action="store_true", help="CSV with a header row")


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `10m`, `2h`, `1d`, `1h30m`; ValueError otherwise."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"`{text}` is not a duration such as 90s, 10m, 2h or 1d") from None
        seconds = sum(float(n) * _UNITS_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"`{text}` is not a positive duration")
    return seconds


def run(args: argparse.Namespace) -> int:
    try:
        since_s = parse_duration(args.since)
    except ValueError as exc:
        print(f"--since: {exc}", file=sys.stderr)
        return EX_USAGE
    if args.limit < 1:
        print("--limit must be at least 1", file=sys.stderr)
        return EX_USAGE
    units: Mapping[str, str] = {}
    if args.db:
        db = Path(args.db)
    else:
        from gateway.config.loader import load_config

        try:
            loaded = load_config(args.config or ".")
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return EX_CONFIG
        db = loaded.state_directory / "telemetry.db"
        units = tag_units(loaded)
    now = time.time()
    try:
        samples = asyncio.run(_read(db, now - since_s, now, args.device, args.limit))
    except StoreError as exc:
        print(f"Cannot read telemetry: {exc}", file=sys.stderr)
        return EX_NOINPUT
    if not samples:
        who = f" of `{args.device}`" if args.device else ""
        print(f"No samples{who} in telemetry.db ({db}) since {args.since} ago.", file=sys.stderr)
    if args.csv:
        write_csv(samples, units, sys.stdout)
    elif samples:
        print(format_table(TABLE_COLUMNS, [table_row(s, units) for s in samples]))
    return EX_OK


def tag_units(loaded: LoadedConfig) -> dict[str, str]:
    """Tag id -> unit, from the configured devices' plugins (a DBC gives CAN units)."""
    from gateway.assembly.plant import configured_devices

    return {
        tag.id: tag.unit
        for device in configured_devices(loaded.devices, loaded.protocols)
        for tag in device.tags
    }


async def _read(db: Path, start: float, end: float, device: str | None, limit: int) -> list[Sample]:
    from gateway.store import TelemetryStore

    store = await TelemetryStore.open(db, read_only=True)
    try:
        return await store.read_recent(start, end, device=device, limit=limit)
    finally:
        await store.close()


TABLE_COLUMNS = ("time (UTC)", "tag", "value", "unit", "quality", "reason")


def value_text(sample: Sample) -> str:
    return "" if sample.value is None else f"{sample.value:.6g}"


def table_row(sample: Sample, units: Mapping[str, str]) -> tuple[str, ...]:
    return (
        iso_time(sample.ts),
        sample.tag,
        value_text(sample),
        units.get(sample.tag, ""),
        sample.quality.name,
        sample.reason or "",
    )


def write_csv(samples: list[Sample], units: Mapping[str, str], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for sample in samples:
        device, _, point = sample.tag.partition(".")
        writer.writerow(
            (
                iso_time(sample.ts),
                repr(sample.ts),
                device,
                point,
                "" if sample.value is None else repr(sample.value),
                units.get(sample.tag, ""),
                sample.quality.name,
                sample.reason or "",
                iso_time(sample.source_ts) if sample.source_ts is not None else "",
            )
        )
