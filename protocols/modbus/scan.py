"""Which addresses of a Modbus table answer: the request planner of `edge-gateway scan`. Pure.

A device answers a read that touches an address it does not map with exception 2, for the
whole request. The scan reads the table in blocks of `block` addresses; a block that answers
is mapped throughout. A refused block may still hold mapped addresses, so it is looked into:
next to a block that answered, address by address from that side until the first refusal
(the edges of a mapped range are exact); and every `step`-th address of it on its own, each
answer walked outwards the same way. A mapped range of `step` addresses or more is always
found; a shorter one that no block or sampled address touches is missed (`--step 1` probes
every address of a refused block, `--block 1` reads one address at a time).

Costs: a mapped block is one request; an unmapped one is 1 + block/step requests. The caller
bounds the total (`--max-requests`) and paces it (`--rate`).

Exceptions 2 and 3 ("illegal data value", which some devices answer for a count they dislike)
mean "not mapped"; any other exception ends the table (exception 1: the device does not
implement that function), and so do three requests in a row without an answer.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Generator
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


_Answer = tuple[Outcome, list[int] | None]
_Plan = Generator[Probe, _Answer, None]


@dataclass
class TableScan:
    """The scan of one table from `start` for `count` addresses; see the module docstring."""

    start: int
    count: int
    block: int
    step: int = 4  # 0: do not sample refused blocks
    found: dict[int, int] = field(default_factory=dict)  # address -> value read
    stopped: str | None = None  # why the scan of this table ended early
    _refused: set[int] = field(default_factory=set)  # single addresses refused
    _silent_in_row: int = 0

    def __post_init__(self) -> None:
        if self.block < 1 or self.count < 1 or self.start < 0 or self.step < 0:
            raise ValueError("start and step must be 0 or more, count and block at least 1")
        if self.start + self.count > 65536:
            raise ValueError(f"addresses {self.start}..{self.start + self.count - 1} pass 65535")
        self._plan = self._blocks()
        self._current: Probe | None = next(self._plan)

    def next_probe(self) -> Probe | None:
        """The next request to make, or None when the table is done."""
        return self._current if self.stopped is None else None

    def record(self, probe: Probe, outcome: Outcome, values: list[int] | None = None) -> None:
        """What the device did with `probe`, the one `next_probe` gave."""
        if probe != self._current:
            raise ValueError(f"{probe} is not the probe this scan asked for")
        if outcome is Outcome.ANSWERED and (values is None or len(values) != probe.count):
            raise ValueError(f"an answer to {probe} must hold {probe.count} values")
        self._silent_in_row = self._silent_in_row + 1 if outcome is Outcome.SILENT else 0
        if self._silent_in_row >= SILENT_LIMIT:
            self.stopped = f"no answer to {SILENT_LIMIT} requests in a row"
        elif outcome is Outcome.UNSUPPORTED:
            self.stopped = "the device does not serve this table (exception answer)"
        try:
            self._current = self._plan.send((outcome, values))
        except StopIteration:
            self._current = None

    def ranges(self) -> list[tuple[int, int]]:
        """The answering addresses as (first, last) ranges, ascending."""
        result: list[tuple[int, int]] = []
        for address in sorted(self.found):
            if result and result[-1][1] == address - 1:
                result[-1] = (result[-1][0], address)
            else:
                result.append((address, address))
        return result

    # --- the plan, as a generator: yields a probe, receives what became of it -------------

    def _blocks(self) -> _Plan:
        end = self.start + self.count
        previous: tuple[int, int, bool] | None = None  # (first, last, answered)
        for first in range(self.start, end, self.block):
            last = min(first + self.block, end) - 1
            outcome, values = yield Probe(first, last - first + 1)
            answered = outcome is Outcome.ANSWERED
            if answered:
                assert values is not None
                self.found.update(zip(range(first, last + 1), values, strict=True))
                if previous is not None and not previous[2]:
                    yield from self._walk(first - 1, -1, previous[0])  # into the one below
            elif self.block > 1:
                if previous is not None and previous[2]:
                    yield from self._walk(first, +1, last)  # from the one below
                if self.step:
                    yield from self._sample(first, last)
            previous = (first, last, answered)

    def _sample(self, first: int, last: int) -> _Plan:
        for address in range(first, last + 1, self.step):
            if address in self.found or address in self._refused:
                continue
            if (yield from self._single(address)):
                yield from self._walk(address - 1, -1, first)
                yield from self._walk(address + 1, +1, last)

    def _walk(self, address: int, step: int, bound: int) -> _Plan:
        """Single addresses from `address` towards `bound` (inclusive) while they answer."""
        while (address <= bound) if step > 0 else (address >= bound):
            if address in self.found or address in self._refused:
                return
            if not (yield from self._single(address)):
                return
            address += step

    def _single(self, address: int) -> Generator[Probe, _Answer, bool]:
        outcome, values = yield Probe(address, 1)
        if outcome is Outcome.ANSWERED and values:
            self.found[address] = values[0]
            return True
        self._refused.add(address)
        return False


def float32_hint(high: int, low: int) -> float | None:
    """The float32 (ABCD) two registers would hold, when it looks like a measurement: finite,
    neither tiny nor huge, and not two zero registers. A hint for the engineer, never a type."""
    if high == 0 and low == 0:
        return None
    value: float = struct.unpack(">f", struct.pack(">HH", high, low))[0]
    if not math.isfinite(value) or not 1e-3 <= abs(value) <= 1e7:
        return None
    return value
