"""A device that answers every Modbus TCP request with a frame that does not decode (an
unknown function code, a byte count that lies, random bytes): BAD samples, a retry, one warning
from the source in our words, and no library traceback in the log (issue 11, item 7)."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import AsyncIterator

import pytest

from gateway.core.clock import ManualClock
from gateway.core.interfaces import Record
from gateway.core.records import Quality
from gateway.pipeline.source import Backoff, PollingSource
from protocols.modbus.driver import ModbusTcpDriver
from tests.support.modbus import connection, point, tags_for


async def garbage_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads MBAP-framed requests; answers each with the same transaction id and a PDU that
    cannot be decoded."""
    rng = random.Random(7)
    try:
        while True:
            transaction, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
            await reader.readexactly(length - 1)
            pdu = rng.choice(
                [
                    bytes([0x55, 1, 2, 3]),  # no such function code
                    bytes([0x03, 200, 0, 1]),  # 200 bytes announced, 2 sent
                    bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))),
                ]
            )
            writer.write(struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def garbage_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(garbage_answers, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_undecodable_answers_are_bad_samples_and_one_line_in_our_words(
    garbage_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    points = [point(name="a", address=0), point(name="b", address=1, type="float32")]
    conn = connection(port=garbage_port, timeout_s=0.2)
    clock = ManualClock()
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=1000)
    source = PollingSource(
        "press",
        lambda: ModbusTcpDriver("press", conn, points, tags_for("press", points), clock),
        queue,
        clock,
        period_s=0.3,
        timeout_s=0.3,
        backoff=Backoff(initial_s=0.01, max_s=0.02),
    )
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        bad = []
        async with asyncio.timeout(10):
            while len(bad) < 10:  # several outages' worth of reconnects
                record = await queue.get()
                assert record.quality is Quality.BAD  # never a bogus value
                bad.append(record)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert source.statistics()[0].errors >= 3
    assert any("does not decode" in (r.reason or "") for r in bad), {r.reason for r in bad}
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    ours = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("gateway")
    ]
    assert len(ours) == 1 and "Device `press` unreachable" in ours[0].getMessage()
