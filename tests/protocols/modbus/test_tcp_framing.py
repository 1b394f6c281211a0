"""ModbusTcpDriver against small misbehaving Modbus TCP servers on loopback: answers whose
byte count disagrees with their payload, frames split across or packed into TCP segments,
overlapping reads. The answers come from a script per request, so each test says exactly what
the device sends."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.core.errors import BadResponse, DeviceUnreachable
from gateway.core.records import Quality
from protocols.modbus.config import RegisterTable
from tests.support.modbus import make_driver, point

# (transaction id, unit id, function code, address, count) -> the bytes to send back
Answer = Callable[[int, int, int, int, int], list[bytes]]


def adu(transaction: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


def registers_pdu(function: int, values: list[int], byte_count: int | None = None) -> bytes:
    data = struct.pack(f">{len(values)}H", *values)
    return bytes([function, len(data) if byte_count is None else byte_count]) + data


def right(transaction: int, unit: int, function: int, address: int, count: int) -> list[bytes]:
    """Register `a` holds `a`; coils are on at odd addresses."""
    if function in (1, 2):
        bits = [(address + k) % 2 for k in range(count)]
        packed = bytes(
            sum(bit << (k % 8) for k, bit in enumerate(bits[i : i + 8]))
            for i in range(0, count, 8)
        )
        return [adu(transaction, unit, bytes([function, len(packed)]) + packed)]
    return [adu(transaction, unit, registers_pdu(function, list(range(address, address + count))))]


class ScriptedDevice:
    """Answers each request with `answers[0]` (then the next; the last one stays)."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                transaction, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                function, address, count = struct.unpack(">BHH", pdu)
                self.requests += 1
                answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                for piece in answer(transaction, unit, function, address, count):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.005)  # each piece its own TCP segment
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def device() -> AsyncIterator[tuple[ScriptedDevice, int]]:
    scripted = ScriptedDevice(right)
    server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)
    try:
        yield scripted, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        # The client has gone; a handler may still be between two pieces of an answer.
        for task in scripted.handlers:
            task.cancel()
        await asyncio.gather(*scripted.handlers, return_exceptions=True)


def byte_count_too_small(transaction: int, unit: int, function: int, address: int, count: int):
    # Announces the registers asked for and sends one more: the MBAP length is right for the
    # bytes sent, the byte count is not.
    values = list(range(address, address + count + 1))
    return [adu(transaction, unit, registers_pdu(function, values, byte_count=2 * count))]


def coil_byte_count_zero(transaction: int, unit: int, function: int, address: int, count: int):
    return [adu(transaction, unit, bytes([function, 0, 0xFF]))]


async def test_a_register_answer_whose_byte_count_disagrees_with_its_payload_is_bad(device):
    scripted, port = device
    scripted.answers = [byte_count_too_small, byte_count_too_small, right]
    points = [point(name="a", address=10), point(name="b", address=11)]
    async with make_driver(port, points) as driver:
        with pytest.raises(BadResponse, match="byte count 4 disagrees with the 6 bytes sent"):
            await driver.read_registers(RegisterTable.HOLDING, 10, 2)
        samples = {r.tag: r for r in await driver.read()}
        assert {(s.quality, s.value) for s in samples.values()} == {(Quality.BAD, None)}
        assert all("byte count 4 disagrees" in (s.reason or "") for s in samples.values())
        # The frame was whole: the same connection goes on.
        assert await driver.read_registers(RegisterTable.HOLDING, 10, 2) == [10, 11]
    assert scripted.requests == 3


async def test_a_bit_answer_whose_byte_count_disagrees_with_its_payload_is_bad(device):
    scripted, port = device
    scripted.answers = [coil_byte_count_zero, right]
    async with make_driver(port, [point(name="c", table="coils", address=0, type="bit")]) as driver:
        with pytest.raises(BadResponse, match="byte count 0 disagrees with the 1 bytes sent"):
            await driver.read_registers(RegisterTable.COILS, 0, 8)
        assert await driver.read_registers(RegisterTable.COILS, 0, 8) == [0, 1] * 4


def split(transaction: int, unit: int, function: int, address: int, count: int) -> list[bytes]:
    (frame,) = right(transaction, unit, function, address, count)
    return [frame[:3], frame[3:9], frame[9:]]  # header split, then the rest


def stale_then_right(transaction: int, unit: int, function: int, address: int, count: int):
    (stale,) = right((transaction + 1000) % 65536 or 1, unit, function, address + 2, count)
    (foreign,) = right(transaction, unit + 1, function, address + 1, count)
    (ours,) = right(transaction, unit, function, address, count)
    return [stale + foreign + ours[:5], ours[5:]]  # three frames in two segments


async def test_frames_split_across_or_packed_into_segments_are_taken_whole(device):
    scripted, port = device
    scripted.answers = [split, stale_then_right, right]
    async with make_driver(port, [point(name="a", address=0)]) as driver:
        assert await driver.read_registers(RegisterTable.HOLDING, 100, 3) == [100, 101, 102]
        # An old transaction and another unit's answer are skipped, ours is taken.
        assert await driver.read_registers(RegisterTable.HOLDING, 200, 2) == [200, 201]
        assert await driver.read_registers(RegisterTable.INPUT, 7, 1) == [7]


async def test_overlapping_reads_on_one_connection_take_turns(device):
    _, port = device
    async with make_driver(port, [point(name="a", address=0)]) as driver:
        results = await asyncio.gather(
            *(driver.read_registers(RegisterTable.HOLDING, 10 * k, 2) for k in range(5))
        )
    assert results == [[10 * k, 10 * k + 1] for k in range(5)]


def mbap_garbage(transaction: int, unit: int, function: int, address: int, count: int):
    return [struct.pack(">HHHB", transaction, 7, 3, unit) + b"\x03\x00"]  # protocol id 7


async def test_a_foreign_protocol_id_drops_the_connection_in_our_words(device):
    scripted, port = device
    scripted.answers = [mbap_garbage]
    async with make_driver(port, [point(name="a", address=0)]) as driver:
        with pytest.raises(DeviceUnreachable, match=r"does not decode .*protocol id 7"):
            await driver.read_registers(RegisterTable.HOLDING, 0, 1)
        with pytest.raises(DeviceUnreachable, match="does not decode"):
            await driver.read_registers(RegisterTable.HOLDING, 0, 1)  # dropped: stays down
