"""Which addresses of a Modbus table answer: the request planner of `edge-gateway scan`. Pure.

A device answers a read that touches an address it does not map with exception 2, for the
whole request. The scan reads the table in blocks: a block that answers is mapped throughout;
a block refused next to one that answered is probed address by address from that side until
the first refusal, so the edges of each mapped range are exact. A refused block with no
answering neighbour is taken as unmapped without probing each address: an isolated register
inside it is missed (`--block 1` finds everything, at one request per address).

Bounded: the caller stops at its request budget. Exceptions 2 and 3 ("illegal data value",
which some devices answer for a count they dislike) mean "not mapped"; any other exception
ends the table (exception 1: the device does not implement that function), and so do three
requests in a row without an answer.
"""

from __future__ import annotations

import enum
import math
import struct
from collections import deque
from dataclasses import dataclass, field

SILENT_LIMIT = 3


class Outcome(enum.Enum):
    ANSWERED = "answered"
    REFUSED = "refused"  # exception 2 or 3: not mapped
    UNSUPPORTED = "unsupported"  # another exception: the table is not served
    SILENT = "silent"  # no answer within the timeout


@dataclass(frozen=True, slots=True)
class Probe:
    address: int
    count: int


@dataclass(slots=True)
class _Walk:
    """Single-address probes from an answering block into a refused one."""

    address: int
    step: int  # +1 upwards, -1 downwards
    last: int  # the last address of the refused block to try


@dataclass
class TableScan:
    """The scan of one table from `start` for `count` addresses, `block` at a time."""

    start: int
    count: int
    block: int
    found: dict[int, int] = field(default_factory=dict)  # address -> value read
    refused_blocks: int = 0
    stopped: str | None = None  # why the scan of this table ended early
    _blocks: deque[Probe] = field(default_factory=deque)
    _outcomes: dict[int, Outcome] = field(default_factory=dict)  # block start -> outcome
    _walk: _Walk | None = None
    _silent_in_row: int = 0

    def __post_init__(self) -> None:
        if self.block < 1 or self.count < 1 or self.start < 0:
            raise ValueError("start must be 0 or more, count and block at least 1")
        if self.start + self.count > 65536:
            raise ValueError(f"addresses {self.start}..{self.start + self.count - 1} pass 65535")
        end = self.start + self.count
        for first in range(self.start, end, self.block):
            self._blocks.append(Probe(first, min(self.block, end - first)))

    def next_probe(self) -> Probe | None:
        """The next request to make, or None when the table is done."""
        if self.stopped is not None:
            return None
        if self._walk is not None:
            return Probe(self._walk.address, 1)
        return self._blocks[0] if self._blocks else None

    @property
    def remaining_blocks(self) -> int:
        return len(self._blocks) if self.stopped is None else 0

    def record(self, probe: Probe, outcome: Outcome, values: list[int] | None = None) -> None:
        """What the device did with `probe`, the one `next_probe` gave."""
        if outcome is Outcome.SILENT:
            self._silent_in_row += 1
            if self._silent_in_row >= SILENT_LIMIT:
                self.stopped = f"no answer to {SILENT_LIMIT} requests in a row"
        else:
            self._silent_in_row = 0
        if outcome is Outcome.UNSUPPORTED:
            self.stopped = "the device does not serve this table (exception answer)"
            return
        if self._walk is not None:
            self._walk_step(outcome, values)
            return
        self._blocks.popleft()
        answered = outcome is Outcome.ANSWERED
        self._outcomes[probe.address] = Outcome.ANSWERED if answered else Outcome.REFUSED
        before = self._outcomes.get(probe.address - self.block)
        if answered:
            if values is None or len(values) != probe.count:
                raise ValueError(f"an answer to {probe} must hold {probe.count} values")
            self.found.update(zip(range(probe.address, probe.address + probe.count), values,
                                  strict=True))  # fmt: skip
            if before is Outcome.REFUSED and self.block > 1:
                # The refused block below may end with mapped addresses: walk down into it.
                self._walk = _Walk(probe.address - 1, -1, probe.address - self.block)
        else:
            self.refused_blocks += 1
            if before is Outcome.ANSWERED and self.block > 1 and outcome is Outcome.REFUSED:
                self._walk = _Walk(probe.address, +1, probe.address + probe.count - 1)

    def _walk_step(self, outcome: Outcome, values: list[int] | None) -> None:
        walk = self._walk
        assert walk is not None
        if outcome is not Outcome.ANSWERED or not values:
            self._walk = None
            return
        self.found[walk.address] = values[0]
        walk.address += walk.step
        if (walk.step > 0 and walk.address > walk.last) or (
            walk.step < 0 and walk.address < walk.last
        ):
            self._walk = None

    def ranges(self) -> list[tuple[int, int]]:
        """The answering addresses as (first, last) ranges, ascending."""
        result: list[tuple[int, int]] = []
        for address in sorted(self.found):
            if result and result[-1][1] == address - 1:
                result[-1] = (result[-1][0], address)
            else:
                result.append((address, address))
        return result


def float32_hint(high: int, low: int) -> float | None:
    """The float32 (ABCD) two registers would hold, when it looks like a measurement: finite,
    neither tiny nor huge, and not two zero registers. A hint for the engineer, never a type."""
    if high == 0 and low == 0:
        return None
    value: float = struct.unpack(">f", struct.pack(">HH", high, low))[0]
    if not math.isfinite(value) or not 1e-3 <= abs(value) <= 1e7:
        return None
    return value
