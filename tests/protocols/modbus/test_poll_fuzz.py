"""Property test of one Modbus poll with garbage answers: a device with points of every type
(enum, bit of a register and coil, string, waveform at a fixed rate or at a point's rate,
deadband, scale and offset), read through each of the driver's request paths and
`PointDecoder`, with each answer right, an exception, the wrong function code, unit or length,
truncated, or random bytes. The paths: RTU's `_Fetch` (the answer frame decoded by pymodbus
as its client does, then `checked_answer`), and Modbus TCP's checks (`mbap.answer_values`, as
`tcp.ModbusTcpLink` applies them).

Against the contract (protocols/modbus/README.md, "Failures"; DESIGN.md section 9): `read()`
never raises; a point whose request was answered badly is BAD with a reason; a point answered
well carries exactly the value its registers hold (tests/support/modbus_registers.py), GOOD,
or UNCERTAIN only for a state outside its `enum`; no NaN or infinity is ever stored.

10 000 examples through the RTU path and 5 000 through the TCP one (derandomized); about
23 s and 12 s on a shared 2-core machine.
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
from gateway.core.errors import BadResponse
from gateway.core.records import Quality, Sample, Waveform
from protocols.modbus.config import ENUM_TYPES, NUMERIC_TYPES, DataType, ModbusPoint, RegisterTable
from protocols.modbus.driver import FUNCTION_CODES, _Fetch, _UnitReader
from protocols.modbus.mbap import Undecodable, answer_values
from tests.support.entropy import CASES, Entropy
from tests.support.modbus import connection, tags_for
from tests.support.modbus_registers import (
    OFFSETS,
    ORDERS,
    SCALES,
    SPECIAL_WORDS,
    expected_raw,
    expected_text,
)

EXAMPLES = {"rtu-client": 10_000, "tcp-codec": 5_000}
UNIT = 7


Address = tuple[bool, RegisterTable, int]


@dataclass
class Device:
    """The answers one poll gets: per request, the frame sent and whether it is a right one."""

    frames: list[tuple[bytes, int]] = field(default_factory=list)  # (pdu, unit id)
    # Keyed (waveform read?, table, address): a scalar read may bridge a waveform's registers,
    # and a waveform's value comes from its own block reads only.
    memory: dict[Address, int] = field(default_factory=dict)
    refused: set[Address] = field(default_factory=set)
    # What the BAD sample's reason must name: the exception code of an exception answer.
    reasons: dict[Address, str] = field(default_factory=dict)
    # Random bytes: the contract fixes no outcome (random bytes can be a well-formed answer;
    # on the RTU path a byte count that disagrees with the payload is not checked, see
    # checked_answer), only the invariants every record keeps.
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


class TcpAnswers:
    """The Modbus TCP path's decisions on the same frames: `answer_values` checks the PDU.
    On a real connection an answer from another unit is skipped (the read then times out) and
    bytes that are no answer drop the connection (tests/protocols/modbus/test_tcp_framing.py
    and test_garbage.py cover both against real sockets); here both are a BadResponse, so the
    poll goes on and the other points are still checked."""

    def __init__(self, frames: Iterator[tuple[bytes, int]]) -> None:
        self._frames = frames

    async def __call__(self, table: RegisterTable, address: int, count: int) -> list[int]:
        frame, unit = next(self._frames)
        if unit != UNIT:
            raise BadResponse(f"answer comes from unit {unit}, expected {UNIT}")
        try:
            return answer_values(frame, FUNCTION_CODES[table], table, address, count)
        except Undecodable as exc:
            raise BadResponse(f"answer does not decode ({exc})") from exc


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
        config["address"] = next_free[table]
        next_free[table] += _register_count(config) + e.choice((0, 0, 1, 5))
        configs.append(config)
    return configs


def _register_count(config: dict[str, Any]) -> int:
    data_type = DataType(config["type"])
    if data_type is DataType.STRING:
        return int(config["length"])
    samples = config["waveform"]["samples"] if "waveform" in config else 1
    return int(data_type.registers * samples)


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


def poll_case(data: bytes) -> tuple[list[ModbusPoint], Device, _UnitReader]:
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
            if kind == "exception":
                device.reasons.update(dict.fromkeys(addresses, f"exception {frame[1]} "))
        device.frames.append((frame, unit))
    return points, device, reader


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
        # A waveform spanning several reads says why its first refused read failed.
        hints = {device.reasons.get(a) for a in addresses if a in device.refused}
        return ("bad", hints.pop() if len(hints) == 1 else None)
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


@pytest.mark.parametrize("path", list(EXAMPLES))
def test_a_poll_of_garbage_answers_stores_only_values_the_registers_hold(loop, caplog, path):
    # pymodbus logs every frame it cannot decode; thousands of records only slow the run.
    caplog.set_level(logging.CRITICAL, logger="pymodbus")
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=EXAMPLES[path], derandomize=True)
    @given(data=CASES)
    def check(data: bytes) -> None:
        points, device, reader = poll_case(data)  # a fresh reader: no deadband history
        frames = iter(device.frames)
        fetch = (
            _Fetch(FakeClient(frames), UNIT, 0.5, "modbus_rtu://fake")
            if path == "rtu-client"
            else TcpAnswers(frames)
        )
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
        assert value is None or value in record.reason, (value, record.reason)
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
