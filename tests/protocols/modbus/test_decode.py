"""Register decoding and encoding: pure tables, no event loop."""

from __future__ import annotations

import math
import struct

import pytest

from protocols.modbus.config import NUMERIC_TYPES, DataType, ModbusPoint, WordOrder
from protocols.modbus.decode import (
    DecodeError,
    decode,
    decode_bit,
    decode_raw,
    decode_string,
    encode,
    encode_string,
)
from protocols.modbus.points import decode_block

ABCD, CDAB, BADC, DCBA = WordOrder.ABCD, WordOrder.CDAB, WordOrder.BADC, WordOrder.DCBA
U16, I16, U32, I32, F32 = (
    DataType.UINT16, DataType.INT16, DataType.UINT32, DataType.INT32, DataType.FLOAT32,
)  # fmt: skip
U64, I64, F64 = DataType.UINT64, DataType.INT64, DataType.FLOAT64

# (registers as the device holds them, type, word order, expected raw value)
KNOWN = [
    ([0x1234], U16, ABCD, 0x1234),
    ([0x1234], U16, CDAB, 0x1234),
    ([0x1234], U16, BADC, 0x3412),
    ([0x1234], U16, DCBA, 0x3412),
    ([0xFFFF], U16, ABCD, 65535),
    ([0xFFFF], I16, ABCD, -1),
    ([0x8000], I16, ABCD, -32768),
    ([0x7FFF], I16, ABCD, 32767),
    ([0x0080], I16, BADC, -32768),
    ([0x1234, 0x5678], U32, ABCD, 0x12345678),
    ([0x5678, 0x1234], U32, CDAB, 0x12345678),
    ([0x3412, 0x7856], U32, BADC, 0x12345678),
    ([0x7856, 0x3412], U32, DCBA, 0x12345678),
    ([0xFFFF, 0xFFFE], I32, ABCD, -2),
    ([0xFFFE, 0xFFFF], I32, CDAB, -2),
    ([0xFFFF, 0xFEFF], I32, BADC, -2),
    ([0xFEFF, 0xFFFF], I32, DCBA, -2),
    ([0x8000, 0x0000], I32, ABCD, -(2**31)),
    # 1.0f is 0x3F800000; -1234.5f is 0xC49A5000.
    ([0x3F80, 0x0000], F32, ABCD, 1.0),
    ([0x0000, 0x3F80], F32, CDAB, 1.0),
    ([0x803F, 0x0000], F32, BADC, 1.0),
    ([0x0000, 0x803F], F32, DCBA, 1.0),
    ([0xC49A, 0x5000], F32, ABCD, -1234.5),
    ([0x5000, 0xC49A], F32, CDAB, -1234.5),
    ([0x9AC4, 0x0050], F32, BADC, -1234.5),
    ([0x0050, 0x9AC4], F32, DCBA, -1234.5),
    # 64-bit: bytes A..H = 01 23 45 67 89 AB CD EF.
    ([0x0123, 0x4567, 0x89AB, 0xCDEF], U64, ABCD, 0x0123456789ABCDEF),
    ([0xCDEF, 0x89AB, 0x4567, 0x0123], U64, CDAB, 0x0123456789ABCDEF),
    ([0x2301, 0x6745, 0xAB89, 0xEFCD], U64, BADC, 0x0123456789ABCDEF),
    ([0xEFCD, 0xAB89, 0x6745, 0x2301], U64, DCBA, 0x0123456789ABCDEF),
    ([0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], I64, ABCD, -2),
    ([0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], I64, CDAB, -2),
    # 1.0 as a double is 0x3FF0000000000000.
    ([0x3FF0, 0, 0, 0], F64, ABCD, 1.0),
    ([0, 0, 0, 0x3FF0], F64, CDAB, 1.0),
    ([0xF03F, 0, 0, 0], F64, BADC, 1.0),
    ([0, 0, 0, 0xF03F], F64, DCBA, 1.0),
]


@pytest.mark.parametrize(("registers", "data_type", "order", "expected"), KNOWN)
def test_decodes_known_register_patterns(registers, data_type, order, expected):
    assert decode_raw(registers, data_type, order) == expected
    assert decode(registers, data_type, order) == float(expected)


@pytest.mark.parametrize(("registers", "data_type", "order", "expected"), KNOWN)
def test_encode_is_the_inverse_of_decode(registers, data_type, order, expected):
    assert encode(expected, data_type, order) == registers


def _reference_bytes(value: float, data_type: DataType) -> bytes:
    fmt = {U16: ">H", I16: ">h", U32: ">I", I32: ">i", F32: ">f", U64: ">Q", I64: ">q",
           F64: ">d"}[data_type]  # fmt: skip
    return struct.pack(fmt, value)


ROUND_TRIP_VALUES: dict[DataType, list[float]] = {
    U16: [0, 1, 255, 256, 40000, 65535],
    I16: [-32768, -1, 0, 1, 12345, 32767],
    U32: [0, 1, 65535, 65536, 0xDEADBEEF, 2**32 - 1],
    I32: [-(2**31), -65536, -1, 0, 65536, 2**31 - 1],
    F32: [0.0, -0.0, 1.5, -273.15, 3.4e38, 1e-38, 123456.789],
    U64: [0, 1, 2**32, 2**53, 2**64 - 2**11],
    I64: [-(2**63), -(2**40), -1, 0, 2**53, 2**63 - 2**10],
    F64: [0.0, -0.0, 1e300, -273.15, 5e-324, 123456.789],
}


@pytest.mark.parametrize("order", list(WordOrder))
@pytest.mark.parametrize("data_type", sorted(NUMERIC_TYPES))
def test_round_trip_matches_a_byte_reference(data_type, order):
    for value in ROUND_TRIP_VALUES[data_type]:
        registers = encode(value, data_type, order)
        assert len(registers) == data_type.registers
        # Independent check of the layout: rebuild ABCD bytes from the word order by hand.
        raw = b"".join(r.to_bytes(2, "big") for r in registers)
        if order in (CDAB, DCBA):
            raw = b"".join(reversed([raw[i : i + 2] for i in range(0, len(raw), 2)]))
        if order in (BADC, DCBA):
            raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
        assert raw == _reference_bytes(value, data_type)
        decoded = decode_raw(registers, data_type, order)
        if data_type is F32:
            assert decoded == struct.unpack(">f", struct.pack(">f", value))[0]
        elif data_type is F64:
            assert decoded == value
        else:
            assert decoded == value


@pytest.mark.parametrize(
    ("registers", "data_type", "scale", "offset", "expected"),
    [
        ([1234], U16, 0.1, 0.0, 123.4),
        ([1234], U16, 0.1, -40.0, 83.4),
        ([0xFFF6], I16, 0.5, 0.0, -5.0),
        ([0x0001, 0x0000], U32, 0.001, 0.0, 65.536),
        ([0x4120, 0x0000], F32, 2.0, 1.0, 21.0),  # 10.0f
        ([100], U16, -1.0, 0.0, -100.0),
    ],
)
def test_applies_scale_then_offset(registers, data_type, scale, offset, expected):
    assert decode(registers, data_type, ABCD, scale, offset) == pytest.approx(expected)
    assert encode(expected, data_type, ABCD, scale, offset) == registers


@pytest.mark.parametrize(
    ("registers", "reason"),
    [
        ([0x7FC0, 0x0000], "nan"),
        ([0xFFC0, 0x0000], "nan"),
        ([0x7F80, 0x0000], "inf"),
        ([0xFF80, 0x0000], "-inf"),
    ],
)
def test_nan_and_infinity_are_refused_with_a_reason(registers, reason):
    with pytest.raises(DecodeError, match=reason):
        decode(registers, F32)


def test_scaling_to_infinity_is_refused():
    with pytest.raises(DecodeError, match="not finite"):
        # float32 max (3.4e38) times 1e300 overflows even a double.
        decode([0x7F7F, 0xFFFF], F32, ABCD, scale=1e300)


@pytest.mark.parametrize(
    ("registers", "data_type", "message"),
    [
        ([], U16, "needs 1 registers, got 0"),
        ([1, 2], U16, "needs 1 registers, got 2"),
        ([1], F32, "needs 2 registers, got 1"),
        ([1, 2, 3], I32, "needs 2 registers, got 3"),
        ([70000], U16, "outside 0..65535"),
        ([-1, 0], U32, "outside 0..65535"),
    ],
)
def test_malformed_registers_are_refused(registers, data_type, message):
    with pytest.raises(DecodeError, match=message):
        decode(registers, data_type)


@pytest.mark.parametrize(
    ("value", "data_type"),
    [(-1, U16), (65536, U16), (32768, I16), (-32769, I16), (2**32, U32), (2**31, I32),
     (1e39, F32), (math.nan, U16), (math.inf, I32)],
)  # fmt: skip
def test_encode_refuses_values_that_do_not_fit(value, data_type):
    with pytest.raises(ValueError, match="does not fit"):
        encode(value, data_type)


def test_encode_rounds_integer_types_to_the_nearest_count():
    assert encode(123.46, U16, scale=0.1) == [1235]
    assert encode(-0.26, I16, scale=0.5) == [0xFFFF]


def test_encode_refuses_a_zero_scale():
    with pytest.raises(ValueError, match="scale"):
        encode(1.0, U16, scale=0.0)


@pytest.mark.parametrize(
    ("register", "order", "bit", "expected"),
    [
        (0b0000_0000_0000_0001, ABCD, 0, 1),
        (0b0000_0000_0000_0001, ABCD, 1, 0),
        (0b1000_0000_0000_0000, ABCD, 15, 1),
        (0b1000_0000_0000_0000, ABCD, 7, 0),
        # Byte-swapped device: its bit 7 travels as bit 15 of the register.
        (0b1000_0000_0000_0000, BADC, 7, 1),
        (0x0100, BADC, 0, 1),
    ],
)
def test_extracts_one_bit_of_a_register(register, order, bit, expected):
    assert decode_bit(register, bit, order) == expected


@pytest.mark.parametrize(
    ("registers", "order", "expected"),
    [
        ([0x4142, 0x4344], ABCD, "ABCD"),
        ([0x4241, 0x4443], BADC, "ABCD"),
        ([0x4344, 0x4142], CDAB, "ABCD"),
        ([0x5058, 0x2D31, 0x0000, 0x0000], ABCD, "PX-1"),  # NUL padding stripped
        ([0x5058, 0x2D31, 0x2020], ABCD, "PX-1"),  # blank padding stripped
        ([0x0000], ABCD, ""),
        ([0x3100], ABCD, "1"),  # odd length: the last byte is a NUL
    ],
)
def test_decodes_strings_in_every_byte_order(registers, order, expected):
    assert decode_string(registers, order) == expected
    if expected and order in (ABCD, BADC):
        length = len(registers)
        assert decode_string(encode_string(expected, length, order), order) == expected


@pytest.mark.parametrize(
    ("registers", "message"),
    [([0x41FF], "non-ASCII"), ([0x4107], "control characters"), ([70000], "outside 0..65535")],
)
def test_garbage_strings_are_refused(registers, message):
    with pytest.raises(DecodeError, match=message):
        decode_string(registers)


def test_string_and_bit_are_not_number_types():
    with pytest.raises(ValueError, match="not a number type"):
        decode_raw([1], DataType.STRING)
    with pytest.raises(ValueError, match="does not fit 1 registers"):
        encode_string("ABC", 1)


def _block_point(**fields: object) -> ModbusPoint:
    waveform = {"samples": 2, "sample_rate_hz": 100.0}
    return ModbusPoint.model_validate({"name": "w", "address": 0, "waveform": waveform, **fields})


def test_a_waveform_block_that_overflows_when_scaled_is_refused():
    registers = encode(1e308, F64) + encode(1.0, F64)
    assert decode_block(registers, _block_point(type="float64"))[1] == 1.0
    with pytest.raises(DecodeError, match="infinite"):
        decode_block(registers, _block_point(type="float64", scale=10.0))


def test_a_waveform_block_with_a_register_beyond_any_integer_is_refused():
    with pytest.raises(DecodeError, match=r"outside 0\.\.65535"):
        decode_block([0, 2**64], _block_point(type="uint16"))
