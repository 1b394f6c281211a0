"""Choices read from a byte string that hypothesis draws: the value-path fuzzers build a whole
case (a device, its points, every answer of a poll) from one `st.binary()` draw.

Why not one hypothesis draw per choice: a poll case takes a hundred choices, and at that many
draws per example hypothesis's own bookkeeping, not the code under test, fills the 10 000
examples' run time. One binary draw keeps what matters: the cases are reproducible
(`derandomize`), and shrinking the bytes towards shorter and zero makes every choice fall back
to its first option (the simplest point type, the right answer), so a failure shrinks to a
small case. Past the end of the drawn bytes the choices go on from a generator seeded with
them: a poll needs more bytes than hypothesis likes to draw at once, and the tail would
otherwise be all zeros (every later point GOOD and alike).
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

T = TypeVar("T")

CASES = st.binary(max_size=300)


class Entropy:
    __slots__ = ("_at", "_data", "_more")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0
        self._more = random.Random(data)

    def byte(self) -> int:
        at = self._at
        self._at += 1
        return self._data[at] if at < len(self._data) else self._more.getrandbits(8)

    def below(self, n: int) -> int:
        """An integer in 0..n-1 (n at most 65 536)."""
        if n <= 1:
            return 0
        if n <= 256:
            return self.byte() % n
        return ((self.byte() << 8) | self.byte()) % n

    def between(self, low: int, high: int) -> int:
        return low + self.below(high - low + 1)

    def chance(self, one_in: int) -> bool:
        """True about once in `one_in` draws; False on a zero byte."""
        return self.below(one_in) == one_in - 1

    def choice(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def raw(self, size: int) -> bytes:
        return bytes(self.byte() for _ in range(size))

    def word(self, special: Sequence[int] = ()) -> int:
        """A 16-bit register value: one of `special` a third of the time, else any."""
        if special and self.below(3) == 1:
            return self.choice(special)
        return (self.byte() << 8) | self.byte()

    def finite_float(self, special: Sequence[float] = ()) -> float:
        """One of `special` half of the time, else any finite double (from 8 bytes)."""
        if special and self.below(2) == 0:
            return self.choice(special)
        (value,) = struct.unpack(">d", self.raw(8))
        return value if math.isfinite(value) else 1.0
