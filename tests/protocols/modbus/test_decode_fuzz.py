"""Property test of the Modbus decoders: `decode`, `decode_raw`, `decode_bit`, `decode_string`
and `decode_block` fed any list of integers, of any length, for every type and word order.
Each returns the value the registers hold by the contract (the word-order rule of
protocols/modbus/decode.py, worked out on its own in tests/support/modbus_registers.py) or
raises `DecodeError` with a reason; none returns NaN, infinity or non-ASCII text (DESIGN.md
section 9, "Bad input").

10 000 examples (derandomized: the same ones in every run); about 13 s on a shared 2-core
machine.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from protocols.modbus.config import DataType, ModbusPoint
from protocols.modbus.decode import DecodeError, decode, decode_bit, decode_raw, decode_string
from protocols.modbus.points import decode_block
from tests.support.entropy import CASES, Entropy
from tests.support.modbus_registers import (
    NUMBER_TYPES,
    OFFSETS,
    ORDERS,
    SCALES,
    SPECIAL_WORDS,
    any_int,
    expected_raw,
    expected_text,
)

EXAMPLES = 10_000


def registers(e: Entropy, count: int) -> list[int]:
    """`count` registers: valid 16-bit words, or (one case in four) some out of range."""
    garbled = e.chance(4)
    return [any_int(e) if garbled else e.word(SPECIAL_WORDS) for _ in range(count)]


def decoder_case(data: bytes) -> tuple[Any, ...]:
    e = Entropy(data)
    kind = e.choice(("number", "number", "bit", "string", "block"))
    order = e.choice(ORDERS)
    if kind == "number":
        data_type = e.choice(NUMBER_TYPES)
        # Mostly the right count, sometimes anything up to 9.
        count = e.between(0, 9) if e.chance(3) else data_type.registers
        return (kind, data_type, order, registers(e, count), e.finite_float(SCALES),
                e.finite_float(OFFSETS))  # fmt: skip
    if kind == "bit":
        return (kind, any_int(e), order, e.between(-2, 17))
    if kind == "string":
        return (kind, registers(e, e.between(0, 8)), order)
    data_type = e.choice(NUMBER_TYPES)
    samples = e.between(2, 6)
    count = e.between(0, 30) if e.chance(3) else samples * data_type.registers
    return (kind, data_type, order, registers(e, count), samples, e.finite_float(SCALES),
            e.finite_float(OFFSETS))  # fmt: skip


@settings(max_examples=EXAMPLES, derandomize=True)
@given(data=CASES)
def test_the_decoders_return_the_registers_value_or_refuse_with_a_reason(data):
    case = decoder_case(data)
    kind = case[0]
    if kind == "number":
        _, data_type, order, registers, scale, offset = case
        raw = expected_raw(registers, data_type, order)
        try:
            got_raw = decode_raw(registers, data_type, order)
        except DecodeError as exc:
            assert str(exc)
            assert raw is None, f"refused registers that hold {raw!r}"
        else:
            assert raw is not None and got_raw == raw
        value = None if raw is None else raw * scale + offset
        if value is not None and not math.isfinite(value):
            value = None
        try:
            got = decode(registers, data_type, order, scale, offset)
        except DecodeError as exc:
            assert str(exc)
            assert value is None, f"refused registers that hold {value!r}"
        else:
            assert value is not None and math.isfinite(got) and got == value
    elif kind == "bit":
        _, register, order, bit = case
        if not 0 <= bit <= 15:
            with pytest.raises(ValueError):  # a config the model refuses: a programming error
                decode_bit(register, bit, order)
            return
        word = expected_raw([register], DataType.UINT16, order)
        try:
            got_bit = decode_bit(register, bit, order)
        except DecodeError:
            assert word is None
        else:
            assert word is not None and got_bit == (word >> bit) & 1
    elif kind == "string":
        _, registers, order = case
        text = expected_text(registers, order)
        try:
            got_text = decode_string(registers, order)
        except DecodeError as exc:
            assert str(exc)
            assert text is None, f"refused registers that hold {text!r}"
        else:
            assert got_text == text and got_text.isprintable() and got_text.isascii()
    else:
        _, data_type, order, registers, samples, scale, offset = case
        point = ModbusPoint.model_validate(
            {"name": "w", "address": 0, "type": data_type.value, "word_order": order.value,
             "scale": scale, "offset": offset,
             "waveform": {"samples": samples, "sample_rate_hz": 100.0}}
        )  # fmt: skip
        per = data_type.registers
        expected: list[float] | None = None
        if len(registers) == samples * per:
            raws = [expected_raw(registers[i : i + per], data_type, order)
                    for i in range(0, len(registers), per)]  # fmt: skip
            if all(r is not None for r in raws):
                expected = [float(r) * scale + offset for r in raws]
                if not all(math.isfinite(v) for v in expected):
                    expected = None
        try:
            data = decode_block(registers, point)
        except DecodeError as exc:
            assert str(exc)
            assert expected is None, f"refused a block that holds {expected!r}"
        else:
            assert expected is not None, f"took a block with no trustworthy value: {data!r}"
            assert np.all(np.isfinite(data))
            np.testing.assert_array_equal(data, np.asarray(expected))
