"""`edge-gateway scan modbus HOST[:PORT] [--unit N] [--table ...]`: which addresses of a Modbus
TCP device answer, and a device file drafted from them.

Read-only (function codes 1-4 through the driver, the only requests it can build), paced
(`--rate` requests per second), and bounded (`--count` addresses per table, `--max-requests`
in all): an engineer sees what a device offers without loading it. The planner is
`protocols.modbus.scan`; each answering address becomes a `uint16` point (a `bit` in the bit
tables) with the value read as a comment, and a float32 reading of register pairs where one
looks plausible: the types are the engineer's to correct from the device's manual.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.core.clock import SystemClock
from gateway.core.errors import BadResponse, DeviceTimeout
from gateway.core.plugins import DeviceDraft, DiscoveryCommand, Option
from gateway.core.yaml_text import comment, flow_mapping, scalar
from protocols.modbus.config import ModbusTcpConnection, RegisterTable
from protocols.modbus.scan import Outcome, TableScan, float32_hint

DEFAULT_TABLES = (RegisterTable.HOLDING, RegisterTable.INPUT, RegisterTable.COILS,
                  RegisterTable.DISCRETE)  # fmt: skip
_PREFIX = {
    RegisterTable.HOLDING: "hr",
    RegisterTable.INPUT: "ir",
    RegisterTable.COILS: "coil",
    RegisterTable.DISCRETE: "di",
}
_NOT_MAPPED = frozenset({2, 3})  # illegal data address, illegal data value


@dataclass
class ScanReport:
    connection: ModbusTcpConnection
    tables: dict[RegisterTable, TableScan] = field(default_factory=dict)
    requests: int = 0
    seconds: float = 0.0
    budget_exhausted: bool = False


Pace = Callable[[float], Awaitable[None]]


async def scan_device(
    connection: ModbusTcpConnection,
    tables: Sequence[RegisterTable],
    *,
    start: int,
    count: int,
    block: int,
    step: int = 4,
    rate_per_s: float,
    max_requests: int,
    pace: Pace = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> ScanReport:
    """Scan `tables` of the device; raises `DeviceUnreachable` (or `DeviceTimeout` on connect)
    when it cannot be reached. `pace` waits between requests (injected by tests)."""
    from protocols.modbus.driver import ExceptionAnswer, ModbusTcpDriver  # pymodbus, lazily

    if rate_per_s <= 0 or max_requests < 1:
        raise ValueError("--rate must be positive and --max-requests at least 1")
    report = ScanReport(connection)
    interval = 1.0 / rate_per_s
    began = monotonic()
    last_request: float | None = None
    async with ModbusTcpDriver("scan", connection, [], [], SystemClock()) as driver:
        for table in tables:
            scan = report.tables[table] = TableScan(start, count, block, step)
            while (probe := scan.next_probe()) is not None:
                if report.requests >= max_requests:
                    report.budget_exhausted = True
                    scan.stopped = f"the request budget ({max_requests}) was used up"
                    break
                if last_request is not None:
                    wait = last_request + interval - monotonic()
                    if wait > 0:
                        await pace(wait)
                last_request = monotonic()
                report.requests += 1
                try:
                    values = await driver.read_registers(table, probe.address, probe.count)
                except ExceptionAnswer as exc:
                    refused = exc.code in _NOT_MAPPED
                    scan.record(probe, Outcome.REFUSED if refused else Outcome.UNSUPPORTED)
                except DeviceTimeout:
                    scan.record(probe, Outcome.SILENT)
                except BadResponse:
                    scan.record(probe, Outcome.REFUSED)  # an answer we cannot trust
                else:
                    scan.record(probe, Outcome.ANSWERED, values)
    report.seconds = monotonic() - began
    return report


def parse_target(text: str, default_port: int = 502) -> tuple[str, int]:
    """`HOST`, `HOST:PORT`, `[IPv6]:PORT` -> (host, port)."""
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\s]+)(?::(\d+))?", text.strip())
    if match is None:
        raise ValueError(f"`{text}` is not HOST or HOST:PORT")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    port = int(port_text) if port_text else default_port
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return host, port


def point_entries(
    table: RegisterTable, found: Mapping[int, int]
) -> list[tuple[dict[str, object], str]]:
    """(entry, comment) per answering address of one table, ascending."""
    entries = []
    for address in sorted(found):
        value = found[address]
        entry: dict[str, object] = {"name": f"{_PREFIX[table]}_{address}", "table": str(table),
                                    "address": address}  # fmt: skip
        if table.is_bits:
            entry["type"] = "bit"
            note = f"read {value}"
        else:
            signed = value - 0x10000 if value & 0x8000 else value
            note = f"read 0x{value:04X} = {value}" + (f" (int16 {signed})" if signed < 0 else "")
            following = found.get(address + 1)
            hint = float32_hint(value, following) if following is not None else None
            if hint is not None:
                note += f"; with {_PREFIX[table]}_{address + 1} as float32 ABCD: {hint:.6g}"
        entries.append((entry, note))
    return entries


def draft_from_scan(
    report: ScanReport, *, device_id: str, max_points: int, command: str
) -> DeviceDraft:
    connection = report.connection
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Drafted by `{comment(command)}` on {when}:",
        f"# {report.requests} read requests in {report.seconds:.1f} s. Every answering address"
        " is a uint16 point",
        "# (a bit in coils and discrete inputs): merge pairs into float32 or uint32, set",
        "# scale and unit from the device's manual, drop what you do not need, add rules.",
    ]
    notes: list[str] = []
    for table, scan in report.tables.items():
        ranges = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in scan.ranges())
        span = f"{scan.start}..{scan.start + scan.count - 1}"
        status = f"; stopped: {scan.stopped}" if scan.stopped else ""
        lines.append(f"# {table} {span}: answered {ranges or 'nothing'}{status}")
        if scan.stopped:
            notes.append(f"{table}: {scan.stopped}.")
    entries = [e for table, scan in report.tables.items() for e in point_entries(table, scan.found)]
    if not entries:
        raise ValueError(
            "no address answered: nothing to draft (check --unit, the tables and the range)"
        )
    if len(entries) > max_points:
        notes.append(
            f"{len(entries)} addresses answered; the draft holds the first {max_points}"
            " (raise --max-points, or narrow --table and --count)."
        )
        lines.append(f"# {len(entries) - max_points} more answering addresses not drafted"
                     " (--max-points)")  # fmt: skip
        entries = entries[:max_points]
    lines += [
        f"id: {scalar(device_id)}",
        "connection:",
        "  protocol: modbus_tcp",
        f"  host: {scalar(connection.host)}",
        f"  port: {connection.port}",
        f"  unit_id: {connection.unit_id}",
        f"  timeout_s: {scalar(connection.timeout_s)}",
        "points:",
    ]
    lines += [f"  - {flow_mapping(entry)}  # {comment(note)}" for entry, note in entries]
    if report.budget_exhausted:
        notes.append("the request budget ran out before every table was scanned (--max-requests).")
    return DeviceDraft(device_id, "\n".join(lines) + "\n", tuple(notes))


def _table(text: str) -> RegisterTable:
    try:
        return RegisterTable(text)
    except ValueError:
        raise ValueError(f"--table must be one of {', '.join(RegisterTable)}") from None


async def _draft(options: Mapping[str, Any], folder: Path | None) -> DeviceDraft:
    host, port = parse_target(options["target"])
    connection = ModbusTcpConnection.model_validate(
        {"protocol": "modbus_tcp", "host": host, "port": port, "unit_id": options["unit"],
         "timeout_s": options["timeout"]}
    )  # fmt: skip
    tables = [_table(t) for t in options["table"]] or list(DEFAULT_TABLES)
    report = await scan_device(
        connection,
        list(dict.fromkeys(tables)),
        start=options["start"],
        count=options["count"],
        block=options["block"],
        step=options["step"],
        rate_per_s=options["rate"],
        max_requests=options["max_requests"],
    )
    device_id = options["id"] or re.sub(r"[^A-Za-z0-9_-]+", "-", f"modbus-{host}-{port}")
    return draft_from_scan(
        report,
        device_id=device_id,
        max_points=options["max_points"],
        command=options.get("command_line")
        or f"edge-gateway scan modbus {options['target']} --unit {options['unit']}",
    )


SCAN_MODBUS = DiscoveryCommand(
    name="scan",
    target="modbus",
    help="read-only scan of a Modbus TCP device: which addresses answer, drafted as points",
    options=(
        Option(("target",), "the device or Modbus gateway", metavar="HOST[:PORT]"),
        Option(("--unit",), "unit id (default 1)", type=int, default=1),
        Option(("--table",), "table to scan; repeat for more (default: all four)",
               multiple=True, choices=tuple(RegisterTable)),
        Option(("--start",), "first address (zero-based, default 0)", type=int, default=0),
        Option(("--count",), "addresses per table (default 1000)", type=int, default=1000),
        Option(("--block",), "addresses per request (default 16)", type=int, default=16),
        Option(("--step",), "in a refused block, try every STEP-th address on its own"
               " (default 4: finds every mapped range of 4 or more; 1 finds all)", type=int,
               default=4),
        Option(("--rate",), "at most this many requests per second (default 50)", type=float,
               default=50.0),
        Option(("--max-requests",), "stop after this many requests (default 2000)", type=int,
               default=2000),
        Option(("--timeout",), "seconds to wait for an answer (default 0.5)", type=float,
               default=0.5),
        Option(("--max-points",), "points in the draft at most (default 200)", type=int,
               default=200),
        Option(("--id",), "device id (default: modbus-HOST-PORT)"),
    ),
    draft=_draft,
)
