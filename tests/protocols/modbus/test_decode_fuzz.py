"""Property tests of the Modbus value path: garbage registers, wrong lengths, exception answers.

Two layers, each checked against what the contract says the registers mean (the word-order
rule of protocols/modbus/decode.py, the point types of protocols/modbus/README.md), never
against what the code happens to return:

- the decoders (`decode`, `decode_raw`, `decode_bit`, `decode_string`, `decode_block`) fed any
  list of integers, of any length, for every type and word order: they return the value the
  registers hold or raise `DecodeError`, and never return NaN, infinity or non-ASCII text;
- one poll of a device with points of every type, through the driver's own request reader
  (`_Fetch`: pymodbus decoding of the answer frame, `checked_answer`) and `PointDecoder`, with
  each answer right, an exception, the wrong function code, unit or length, or random bytes:
  `read()` never raises, a point whose request was answered badly is BAD with a reason, a
  point answered well carries exactly its registers' value, GOOD, or UNCERTAIN only for a
  state outside its `enum`; no NaN or infinity is ever stored (DESIGN.md section 9, "Bad
  input").

10 000 examples each (derandomized: the same ones in every run); about 5 s and 20 s.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import DecodePDU

from gateway.core.clock import ManualClock
from gateway.core.records import Quality, Sample, Waveform
from protocols.modbus.config import (
    ENUM_TYPES,
    NUMERIC_TYPES,
    DataType,
    ModbusPoint,
    RegisterTable,
    WordOrder,
)
from protocols.modbus.decode import (
    DecodeError,
    decode,
    decode_bit,
    decode_raw,
    decode_string,
)
from protocols.modbus.driver import FUNCTION_CODES, _Fetch, _UnitReader
from protocols.modbus.points import decode_block
from tests.support.entropy import CASES, Entropy
from tests.support.modbus import connection, tags_for

EXAMPLES = 10_000
UNIT = 7
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


# --- the decoders -------------------------------------------------------------------------


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


# --- one poll through the driver's reader ---------------------------------------------------


Address = tuple[bool, RegisterTable, int]


@dataclass
class Device:
    """The answers one poll gets: per request, the frame sent and whether it is a right one."""

    frames: list[tuple[bytes, int]] = field(default_factory=list)  # (pdu, unit id)
    # Keyed (waveform read?, table, address): a scalar read may bridge a waveform's registers,
    # and a waveform's value comes from its own block reads only.
    memory: dict[Address, int] = field(default_factory=dict)
    refused: set[Address] = field(default_factory=set)
    # Random bytes: the contract fixes no outcome (a byte count that disagrees with the payload
    # is not checked, see checked_answer), only the invariants every record keeps.
    unknown: set[Address] = field(default_factory=set)


class FakeClient:
    """Stands in for pymodbus's client: decodes each answer frame as the client does
    (`DecodePDU`) and hands the PDU to the driver's checks. A frame that does not decode makes
    the real client drop the connection (tests/protocols/modbus/test_garbage.py covers that
    against a real socket); here it is the ModbusIOException pymodbus raises for a frame it
    cannot match, so the poll goes on and the other points are still checked."""

    connected = True

    def __init__(self, frames: Iterator[tuple[bytes, int]]) -> None:
        self._frames = frames
        self._decoder = DecodePDU(is_server=False)

    async def _answer(self, address: int, *, count: int, device_id: int) -> Any:
        frame, unit = next(self._frames)
        pdu = self._decoder.decode(frame)
        if pdu is None:
            raise ModbusIOException("frame does not decode")
        pdu.dev_id = unit
        return pdu

    read_coils = read_discrete_inputs = read_holding_registers = read_input_registers = _answer


def point_configs(e: Entropy) -> list[dict[str, Any]]:
    """Points of every type on one device, laid out without overlaps."""
    next_free = {table: e.between(0, 3) for table in RegisterTable}
    configs: list[dict[str, Any]] = []
    numeric_scalars: list[str] = []
    for n in range(e.between(1, 6)):
        data_type = e.choice(tuple(DataType))
        config: dict[str, Any] = {"name": f"p{n}", "type": data_type.value}
        if data_type is DataType.BIT:
            table = e.choice((RegisterTable.HOLDING, *RegisterTable))
            if not table.is_bits:
                config["bit"] = e.between(0, 15)
        else:
            table = e.choice((RegisterTable.HOLDING, RegisterTable.INPUT))
        config["table"] = table.value
        config["word_order"] = e.choice(ORDERS).value
        if data_type is DataType.STRING:
            config["length"] = e.between(1, 6)
        waveform = data_type in NUMERIC_TYPES and e.chance(5)
        if waveform:
            samples = e.between(2, 5)
            rate_point = e.choice([None, *numeric_scalars])
            config["waveform"] = (
                {"samples": samples, "sample_rate_hz": 2000.0}
                if rate_point is None
                else {"samples": samples, "sample_rate_point": rate_point}
            )
        elif data_type in ENUM_TYPES and e.chance(2):
            config["enum"] = {0: "stopped", 1: "running", 2: "fault"}
        elif data_type in NUMERIC_TYPES:
            numeric_scalars.append(config["name"])
        if data_type in NUMERIC_TYPES and "enum" not in config:
            config["scale"] = e.finite_float(SCALES)
            config["offset"] = e.finite_float(OFFSETS)
        if not waveform and data_type is not DataType.STRING and e.chance(5):
            config["deadband"] = e.choice((0.0, 0.5, 10.0))
        point = ModbusPoint.model_validate({**config, "address": 0})
        config["address"] = next_free[table]
        next_free[table] += point.register_count + e.choice((0, 0, 1, 5))
        configs.append(config)
    return configs


ANSWERS = ("right", "right", "right", "exception", "function", "unit", "short", "long",
           "random", "truncated")  # fmt: skip


def _frame(e: Entropy, table: RegisterTable, count: int, kind: str) -> tuple[bytes, int]:
    function = FUNCTION_CODES[table]
    unit = UNIT
    if kind == "exception":
        return bytes([function | 0x80, e.byte()]), unit
    if kind == "random":
        return e.raw(e.between(0, 12)), unit
    if kind == "truncated":
        return bytes([function]), unit
    if kind == "unit":
        unit = e.choice([u for u in (1, 2, 255, 0x17) if u != UNIT])
    if kind == "function":
        function = e.choice([f for f in (1, 2, 3, 4, 5, 6, 0x2B) if f != function])
    if table.is_bits:
        size = (count + 7) // 8
        if kind == "short":
            size = e.between(0, size - 1)
        elif kind == "long":
            size += e.between(1, 3)
        return bytes([function, size]) + e.raw(size), unit
    words = count
    if kind == "short":
        words = e.between(0, count - 1)
    elif kind == "long":
        words = count + e.between(1, 3)
    body = [e.word(SPECIAL_WORDS) for _ in range(words)]
    return bytes([function, 2 * words]) + struct.pack(f">{words}H", *body), unit


def poll_case(data: bytes) -> tuple[list[ModbusPoint], Device]:
    e = Entropy(data)
    points = [ModbusPoint.model_validate(c) for c in point_configs(e)]
    reader = _reader(points)
    device = Device()
    block_reads = {id(r) for _, reads in reader.plan.waveform_requests for r in reads}
    for request in reader.plan.all_requests:
        table = RegisterTable(request.table)
        kind = e.choice(ANSWERS)
        frame, unit = _frame(e, table, request.count, kind)
        block = id(request) in block_reads
        addresses = [(block, table, request.address + k) for k in range(request.count)]
        if kind == "random":
            device.unknown.update(addresses)
        elif kind == "right":
            if table.is_bits:
                bits = [(frame[2 + k // 8] >> (k % 8)) & 1 for k in range(request.count)]
                device.memory.update(zip(addresses, bits, strict=True))
            else:
                words = struct.unpack(f">{request.count}H", frame[2:])
                device.memory.update(zip(addresses, words, strict=True))
        else:
            device.refused.update(addresses)
        device.frames.append((frame, unit))
    return points, device


def _reader(points: Sequence[ModbusPoint]) -> _UnitReader:
    # Small reads, so that one device makes several requests and one bad answer spoils only
    # some of its points.
    limits = connection(502, max_registers_per_read=8, max_bits_per_read=16)
    return _UnitReader("dev", UNIT, limits, points, tags_for("dev", points), ManualClock(), 0.5)


Outcome = tuple[str, Any]  # ("bad", None) | ("good", value) | ("uncertain", value) | ("text", t)


def expected_outcome(point: ModbusPoint, device: Device, values: dict[str, Outcome]) -> Outcome:
    table = point.table
    block = point.waveform is not None
    addresses = [(block, table, point.address + k) for k in range(point.register_count)]
    if any(a in device.unknown for a in addresses):
        return ("any", None)
    if any(a in device.refused or a not in device.memory for a in addresses):
        return ("bad", None)
    words = [device.memory[a] for a in addresses]
    order = point.word_order
    if point.type is DataType.STRING:
        return ("text", expected_text(words, order))
    if point.type is DataType.BIT:
        if table.is_bits:
            raw: Any = words[0]
        else:
            word = expected_raw(words, DataType.UINT16, order)
            raw = (word >> (point.bit or 0)) & 1
    elif point.waveform is not None:
        per = point.type.registers
        raws = [expected_raw(words[i : i + per], point.type, order)
                for i in range(0, len(words), per)]  # fmt: skip
        if any(r is None for r in raws):
            return ("bad", None)
        data = [float(r) * point.scale + point.offset for r in raws]
        if not all(math.isfinite(v) for v in data):
            return ("bad", None)
        rate: Any = point.waveform.sample_rate_hz
        if point.waveform.sample_rate_point is not None:
            quality, rate = values[point.waveform.sample_rate_point]
            if quality == "any":
                return ("any", None)
            if quality != "good":
                return ("bad", None)
        if not (math.isfinite(rate) and rate > 0):
            return ("bad", None)
        return ("waveform", (rate, data))
    else:
        raw = expected_raw(words, point.type, order)
        if raw is None:
            return ("bad", None)
    if point.enum is not None:
        return ("good" if raw in point.enum else "uncertain", float(raw))
    value = raw * point.scale + point.offset
    return ("good", float(value)) if math.isfinite(value) else ("bad", None)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_a_poll_of_garbage_answers_stores_only_values_the_registers_hold(loop, caplog):
    # pymodbus logs every frame it cannot decode; thousands of records only slow the run.
    caplog.set_level(logging.CRITICAL, logger="pymodbus")
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=EXAMPLES, derandomize=True)
    @given(data=CASES)
    def check(data: bytes) -> None:
        points, device = poll_case(data)
        reader = _reader(points)
        frames = iter(device.frames)
        fetch = _Fetch(FakeClient(frames), UNIT, 0.5, "modbus_tcp://fake")
        records = loop.run_until_complete(reader.read(fetch))  # never raises
        assert next(frames, None) is None, "every planned request was asked"
        by_tag = {record.tag: record for record in records}
        assert len(by_tag) == len(records), "one record per tag"
        expected: dict[str, Outcome] = {}
        for point, tag_id in zip(points, reader.tag_ids, strict=True):
            outcome = expected_outcome(point, device, expected)
            expected[point.name] = outcome
            seen[outcome[0]] += 1
            record = by_tag.get(tag_id)
            _check_record(point, outcome, record, reader.decoder.texts.get(tag_id))
        for record in records:  # whatever else: never a non-finite value stored
            if isinstance(record, Sample) and record.value is not None:
                assert math.isfinite(record.value)
            if isinstance(record, Waveform):
                assert np.all(np.isfinite(record.data))

    check()
    # Every outcome the contract names was met, not only refusals.
    assert {"good", "uncertain", "bad", "waveform", "text", "any"} <= set(seen), seen


def _check_record(point: ModbusPoint, outcome: Outcome, record: Any, text: str | None) -> None:
    kind, value = outcome
    if point.type is DataType.STRING:
        assert record is None, "string points are metadata, not records"
        if kind == "text" and value is not None:
            assert text == value
        elif text is not None:  # refused or garbage: no text from this poll
            assert text.isprintable() and text.isascii()
        return
    if kind == "any":
        assert record is not None
        if isinstance(record, Sample):
            assert (record.value is None) == (record.quality is Quality.BAD)
            assert record.quality is Quality.GOOD or record.reason
            if record.quality is Quality.UNCERTAIN:
                assert point.enum is not None and int(record.value) not in point.enum
        return
    if record is None:
        # Only a deadband holds a sample back, and never the first one of a fresh decoder.
        raise AssertionError(f"no record for `{point.name}` (expected {outcome})")
    if kind == "bad":
        assert isinstance(record, Sample) and record.quality is Quality.BAD, record
        assert record.value is None and record.reason
        return
    if kind == "waveform":
        rate, data = value
        assert isinstance(record, Waveform), record
        assert record.sample_rate == rate
        np.testing.assert_array_equal(record.data, np.asarray(data))
        return
    assert isinstance(record, Sample), record
    assert record.value == value and math.isfinite(record.value)
    if kind == "good":
        assert record.quality is Quality.GOOD and record.reason is None
    else:
        assert record.quality is Quality.UNCERTAIN and record.reason
        assert point.enum is not None and int(record.value) not in point.enum
