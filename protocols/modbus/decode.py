"""Registers <-> engineering values. Pure: plain values in, plain values out.

Byte layout: a Modbus register travels big-endian (high byte first). Labelling the bytes of a
32-bit value A B C D from most to least significant, the word orders of `WordOrder` put them
in the registers as

    ABCD  [AB, CD]   big-endian words (the Modbus default)
    CDAB  [CD, AB]   word-swapped (many PLCs)
    BADC  [BA, DC]   byte-swapped inside each word
    DCBA  [DC, BA]   little-endian

The rule generalises to any register count (reverse the words for CDAB and DCBA, swap the two
bytes of every word for BADC and DCBA), so 64-bit values [AB, CD, EF, GH] follow it too. A
one-register type only has the byte swap: ABCD and CDAB read AB, BADC and DCBA read BA.
Strings use the same rule: ABCD puts the first character in the high byte of the first
register.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from protocols.modbus.config import DataType, WordOrder


class DecodeError(ValueError):
    """Registers that cannot be trusted as a value; the message is the BAD sample's reason."""


# Big-endian struct formats: the word order is undone on the bytes before unpacking.
_FORMATS: dict[DataType, struct.Struct] = {
    DataType.UINT16: struct.Struct(">H"),
    DataType.INT16: struct.Struct(">h"),
    DataType.UINT32: struct.Struct(">I"),
    DataType.INT32: struct.Struct(">i"),
    DataType.UINT64: struct.Struct(">Q"),
    DataType.INT64: struct.Struct(">q"),
    DataType.FLOAT32: struct.Struct(">f"),
    DataType.FLOAT64: struct.Struct(">d"),
}
_FLOAT_TYPES = frozenset({DataType.FLOAT32, DataType.FLOAT64})
_SWAPS_WORDS = frozenset({WordOrder.CDAB, WordOrder.DCBA})
_SWAPS_BYTES = frozenset({WordOrder.BADC, WordOrder.DCBA})


def _to_big_endian(registers: Sequence[int], word_order: WordOrder) -> bytes:
    words = list(reversed(registers)) if word_order in _SWAPS_WORDS else list(registers)
    raw = struct.pack(f">{len(words)}H", *words)
    if word_order in _SWAPS_BYTES:
        # Swap the two bytes of every word: b"ABCD" -> b"BADC".
        swapped = bytearray(raw)
        swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
        raw = bytes(swapped)
    return raw


def _from_big_endian(raw: bytes, word_order: WordOrder) -> list[int]:
    if word_order in _SWAPS_BYTES:
        swapped = bytearray(raw)
        swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
        raw = bytes(swapped)
    words = list(struct.unpack(f">{len(raw) // 2}H", raw))
    return list(reversed(words)) if word_order in _SWAPS_WORDS else words


def decode_raw(
    registers: Sequence[int], data_type: DataType, word_order: WordOrder = WordOrder.ABCD
) -> int | float:
    """The raw number held in `registers`, before scale and offset.

    Raises DecodeError for a wrong register count, a register outside 0..65535, or a float
    that is NaN or infinite (a device's "no value" pattern must never become a number).
    """
    if data_type not in _FORMATS:
        raise ValueError(f"{data_type} is not a number type")
    expected = data_type.registers
    if len(registers) != expected:
        raise DecodeError(f"{data_type} needs {expected} registers, got {len(registers)}")
    for register in registers:
        if not 0 <= register <= 0xFFFF:
            raise DecodeError(f"register value {register} is outside 0..65535")
    (value,) = _FORMATS[data_type].unpack(_to_big_endian(registers, word_order))
    if data_type in _FLOAT_TYPES and not math.isfinite(value):
        raise DecodeError(f"{data_type} value is {value!r}, not a number")
    return value


def decode(
    registers: Sequence[int],
    data_type: DataType,
    word_order: WordOrder = WordOrder.ABCD,
    scale: float = 1.0,
    offset: float = 0.0,
) -> float:
    """Engineering value = raw * scale + offset. Raises DecodeError (see `decode_raw`)."""
    value = decode_raw(registers, data_type, word_order) * scale + offset
    if not math.isfinite(value):
        raise DecodeError(f"scaled value {value!r} is not finite")
    return float(value)


def encode(
    value: float,
    data_type: DataType,
    word_order: WordOrder = WordOrder.ABCD,
    scale: float = 1.0,
    offset: float = 0.0,
) -> list[int]:
    """The registers a device would hold for engineering `value` (inverse of `decode`).

    Integer types are rounded to the nearest raw count. Raises ValueError when the raw value
    does not fit the type, so a simulator cannot silently serve a wrapped-around number.
    """
    if scale == 0:
        raise ValueError("scale must not be 0")
    # Unscaled integers stay exact: a 64-bit count does not survive a trip through a float.
    raw: float = value if (scale == 1 and offset == 0) else (value - offset) / scale
    if data_type not in _FORMATS:
        raise ValueError(f"{data_type} is not a number type")
    packer = _FORMATS[data_type]
    if data_type in _FLOAT_TYPES:
        try:
            packed = packer.pack(raw)
        except (OverflowError, struct.error) as exc:
            raise ValueError(f"{value!r} does not fit {data_type}") from exc
    else:
        try:
            packed = packer.pack(round(raw))
        except (OverflowError, struct.error, ValueError) as exc:
            raise ValueError(f"{value!r} (raw {raw!r}) does not fit {data_type}") from exc
    return _from_big_endian(packed, word_order)


def decode_bit(register: int, bit: int, word_order: WordOrder = WordOrder.ABCD) -> int:
    """Bit `bit` (0 = least significant) of one register, after the byte order is undone."""
    if not 0 <= bit <= 15:
        raise ValueError(f"bit must be 0..15, not {bit}")
    word = decode_raw([register], DataType.UINT16, word_order)
    return (int(word) >> bit) & 1


def decode_string(registers: Sequence[int], word_order: WordOrder = WordOrder.ABCD) -> str:
    """Text held two characters per register, NUL padding and trailing blanks stripped.

    Raises DecodeError for bytes that are not printable ASCII (garbage must not become text).
    """
    for register in registers:
        if not 0 <= register <= 0xFFFF:
            raise DecodeError(f"register value {register} is outside 0..65535")
    raw = _to_big_endian(registers, word_order).strip(b"\0").rstrip(b" ")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError(f"string holds non-ASCII bytes {raw!r}") from None
    if not text.isprintable():
        raise DecodeError(f"string holds control characters {raw!r}")
    return text


def encode_string(text: str, length: int, word_order: WordOrder = WordOrder.ABCD) -> list[int]:
    """`length` registers holding `text`, NUL padded (inverse of `decode_string`)."""
    raw = text.encode("ascii")
    if len(raw) > 2 * length:
        raise ValueError(f"{text!r} does not fit {length} registers")
    return _from_big_endian(raw.ljust(2 * length, b"\0"), word_order)
