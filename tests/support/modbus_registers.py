"""The Modbus register contract written out for the value-path fuzzers: what registers
mean by the word-order rule of protocols/modbus/decode.py, computed on its own (bytes
reversed and swapped, `struct`), and the register words worth meeting."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

from protocols.modbus.config import NUMERIC_TYPES, DataType, WordOrder
from tests.support.entropy import Entropy

FLOAT_TYPES = {DataType.FLOAT32, DataType.FLOAT64}
_STRUCT = {
    DataType.UINT16: ">H", DataType.INT16: ">h", DataType.UINT32: ">I", DataType.INT32: ">i",
    DataType.UINT64: ">Q", DataType.INT64: ">q", DataType.FLOAT32: ">f", DataType.FLOAT64: ">d",
}  # fmt: skip

# Register words a device really holds now and then: NaN and infinity patterns of float32 and
# float64 halves, extremes, small state codes, printable and unprintable ASCII pairs.
SPECIAL_WORDS = (
    0x0000, 0x0001, 0x0002, 0x7FFF, 0x8000, 0xFFFF, 0x7FC0, 0x7F80, 0xFF80, 0xFFC0, 0x7FF8,
    0x7FF0, 0xFFF0, 0x7F7F, 0x4142, 0x2020, 0x2000, 0x0041, 0x4100, 0x0D0A, 0x80FF,
)  # fmt: skip
# What a broken caller or a library bug could hand over: out of 16-bit range too.
OUT_OF_RANGE = (-1, 0x10000, -(2**15), 2**31, 2**63, 2**64 + 1, -(2**70))
ORDERS = tuple(WordOrder)
SCALES = (1.0, 0.1, -2.5, 0.0, 1e300, 1e-300, 3.5e38, -1e308)
OFFSETS = (0.0, -40.0, 1e308, -1e308, 0.5)
NUMBER_TYPES = tuple(sorted(NUMERIC_TYPES))


def any_int(e: Entropy) -> int:
    return e.choice(OUT_OF_RANGE) if e.chance(4) else e.word(SPECIAL_WORDS)


def value_bytes(registers: Sequence[int], order: WordOrder) -> bytes:
    """The value's bytes, most significant first, from the registers as the device holds them
    (decode.py's docstring: ABCD [AB, CD], CDAB [CD, AB], BADC [BA, DC], DCBA [DC, BA])."""
    wire = b"".join(r.to_bytes(2, "big") for r in registers)
    if order is WordOrder.DCBA:  # little-endian: the whole value reversed
        return wire[::-1]
    pairs = [wire[i : i + 2] for i in range(0, len(wire), 2)]
    if order is WordOrder.CDAB:
        return b"".join(reversed(pairs))
    if order is WordOrder.BADC:
        return b"".join(p[::-1] for p in pairs)
    return wire


def expected_raw(registers: Sequence[int], data_type: DataType, order: WordOrder) -> Any:
    """The raw number, or None when the contract says the registers cannot be a value."""
    if len(registers) != data_type.registers or not all(0 <= r <= 0xFFFF for r in registers):
        return None
    (raw,) = struct.unpack(_STRUCT[data_type], value_bytes(registers, order))
    if data_type in FLOAT_TYPES and not math.isfinite(raw):
        return None
    return raw


def expected_text(registers: Sequence[int], order: WordOrder) -> str | None:
    """Text by the same rule (decode.py: "Strings use the same rule"), NUL padding and
    trailing blanks stripped; None when a byte left is not printable ASCII."""
    if not all(0 <= r <= 0xFFFF for r in registers):
        return None
    text = value_bytes(registers, order).strip(b"\0").rstrip(b" ")
    if any(not 0x20 <= byte < 0x7F for byte in text):
        return None
    return text.decode("ascii")
