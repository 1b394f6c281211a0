"""The request planner: merges a device's points into the fewest register reads. Pure.

Points of one table whose registers are contiguous, overlap, or lie at most `max_gap` registers
apart share one read, as long as the read stays within `max_registers` (125 is the protocol
limit for function codes 3 and 4, Modbus Application Protocol V1.1b3 section 6.3). A small
default gap keeps reads from spanning registers that a device may not implement: many devices
answer a read touching one unmapped register with exception 2 for the whole block.

Coils and discrete inputs (`BIT_TABLES`) are planned the same way in bits, with `max_bits`
(2000, section 6.1/6.2) and a gap of 16 bits per register of `max_gap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
DEFAULT_MAX_GAP = 4
BIT_TABLES = frozenset({"coils", "discrete"})


@dataclass(frozen=True, slots=True)
class Span:
    """The registers one point occupies. `table` is a plain key such as "holding"."""

    table: str
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class PointSlice:
    """Where point number `point` (index into the planned spans) sits in a read's answer."""

    point: int
    offset: int
    count: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: str
    address: int
    count: int
    slices: tuple[PointSlice, ...]

    @property
    def end(self) -> int:
        """One past the last register read."""
        return self.address + self.count


def plan_reads(
    spans: Sequence[Span],
    *,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_gap: int = DEFAULT_MAX_GAP,
    max_bits: int = MAX_BITS_PER_READ,
) -> list[ReadRequest]:
    """Group `spans` into read requests, tables in order of first appearance, addresses ascending.

    Every span lands in exactly one request. Raises ValueError for limits that make no sense
    or a span longer than the table's limit (it could never be read in one request).
    """
    if not 1 <= max_registers <= MAX_REGISTERS_PER_READ:
        raise ValueError(f"max_registers must be 1..{MAX_REGISTERS_PER_READ}, not {max_registers}")
    if not 1 <= max_bits <= MAX_BITS_PER_READ:
        raise ValueError(f"max_bits must be 1..{MAX_BITS_PER_READ}, not {max_bits}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be 0 or more, not {max_gap}")
    for span in spans:
        limit = max_bits if span.table in BIT_TABLES else max_registers
        if span.count < 1:
            raise ValueError(f"span at {span.table} {span.address} has count {span.count}")
        if span.count > limit:
            raise ValueError(
                f"span at {span.table} {span.address} has {span.count} registers,"
                f" more than {limit} per read"
            )

    tables = list(dict.fromkeys(span.table for span in spans))
    requests: list[ReadRequest] = []
    for table in tables:
        requests.extend(
            _plan_table(spans, table, max_bits, 16 * max_gap)
            if table in BIT_TABLES
            else _plan_table(spans, table, max_registers, max_gap)
        )
    return requests


def plan_block(table: str, address: int, count: int, max_registers: int) -> list[ReadRequest]:
    """Consecutive reads covering one long block (a waveform), each at most `max_registers`.
    Each request carries one slice with `point` set to the request's position in the block."""
    if count < 1 or max_registers < 1:
        raise ValueError(f"cannot split {count} registers into reads of {max_registers}")
    requests = []
    for index, start in enumerate(range(address, address + count, max_registers)):
        size = min(max_registers, address + count - start)
        requests.append(ReadRequest(table, start, size, (PointSlice(index, 0, size),)))
    return requests


def describe_plan(requests: Sequence[ReadRequest]) -> str:
    """'3 requests, 134 registers and 16 bits (holding 0+125, holding 125+9, coils 0+16)'."""
    registers = sum(r.count for r in requests if r.table not in BIT_TABLES)
    bits = sum(r.count for r in requests if r.table in BIT_TABLES)
    shown = ", ".join(f"{r.table} {r.address}+{r.count}" for r in requests[:8])
    more = f", ... {len(requests) - 8} more" if len(requests) > 8 else ""
    noun = "request" if len(requests) == 1 else "requests"
    return f"{len(requests)} {noun}, {registers} registers and {bits} bits ({shown}{more})"


def _plan_table(
    spans: Sequence[Span], table: str, max_registers: int, max_gap: int
) -> list[ReadRequest]:
    requests: list[ReadRequest] = []
    members = sorted(
        (index for index, span in enumerate(spans) if span.table == table),
        key=lambda index: (spans[index].address, spans[index].count),
    )
    group: list[int] = []
    start = end = 0
    for index in members:
        span = spans[index]
        span_end = span.address + span.count
        fits = (
            group and span.address - end <= max_gap and max(end, span_end) - start <= max_registers
        )
        if not fits:
            if group:
                requests.append(_request(table, start, end, group, spans))
            group, start, end = [], span.address, span_end
        group.append(index)
        end = max(end, span_end)
    if group:
        requests.append(_request(table, start, end, group, spans))
    return requests


def _request(
    table: str, start: int, end: int, group: list[int], spans: Sequence[Span]
) -> ReadRequest:
    slices = tuple(
        PointSlice(point=index, offset=spans[index].address - start, count=spans[index].count)
        for index in group
    )
    return ReadRequest(table=table, address=start, count=end - start, slices=slices)
