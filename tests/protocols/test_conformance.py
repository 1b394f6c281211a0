"""One conformance suite, every driver (issue 3, "All protocols"; DESIGN.md sections 9 and 10).

The same tests run against each driver and a real device on loopback: Modbus TCP (pymodbus
server), Modbus RTU (pymodbus serial server over a socat pty pair), OPC UA read() and OPC UA
subscription (asyncua server), CAN (python-can virtual bus and the simulator's CanMachine).
The adapters are in tests/support/conformance.py.

Properties: connect and read healthy values; exit twice and exit without enter are harmless; a
refused connection or absent device is our DriverError; a device vanishing mid-poll gives a
DriverError or BAD samples within the configured timeout, never a value; no task or thread
outlives the driver; the device side sees nothing but reads.

What "vanishing" means per protocol: the Modbus TCP and OPC UA servers stop (connections
closed), the RTU units fall silent on a line that stays plugged in (so: DeviceTimeout), and the
CAN machine stops sending. A listener on a CAN bus cannot tell a silent node from an idle bus:
no error frame and no bus-off follow (those describe the listener's own controller, and the
driver's tests cover them), so the meaningful outcome is every signal turning stale: BAD
samples once stale_after has passed on the driver's clock.

A driver that fails a property is not fixed here: its case goes into KNOWN_FAILURES with the
reason, and is marked xfail(strict=True) so that a fix is noticed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.core.errors import DeviceTimeout, DeviceUnreachable, DriverError
from gateway.core.interfaces import Record
from protocols import PROTOCOLS
from tests.support.conformance import (
    CAN_SLOWEST_STALE_S,
    CanCase,
    DriverCase,
    ModbusRtuCase,
    ModbusTcpCase,
    OpcUaCase,
    healthy_problems,
    lost_problems,
)
from tests.support.modbus import unused_port
from tests.support.opcua import ThreadedServer

# Case -> the protocol of the table it exercises (OPC UA in both of its shapes).
CASE_PROTOCOLS = {
    "modbus_tcp": "modbus_tcp",
    "modbus_rtu": "modbus_rtu",
    "opcua_read": "opcua",
    "opcua_subscribe": "opcua",
    "can": "can",
}
CASES = list(CASE_PROTOCOLS)

# (test function, case) -> why the driver fails that property. Empty: every driver conforms.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}

# Generous bound for a healthy connect-and-read on two busy cores.
READ_DEADLINE_S = 10.0
# Beyond the configured timeout, how long a vanished device may take to show (scheduling slack
# on two shared cores; the OPC UA watchdog interval is 0.2 s).
HANG_MARGIN_S = 3.0


@pytest.fixture(scope="module")
def opcua_plant() -> Iterator[ThreadedServer]:
    """One OPC UA server for both OPC UA cases (it takes about a second to start)."""
    server = ThreadedServer(machine="Mill").start()
    yield server
    server.stop()


async def _build(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> DriverCase:
    if name == "modbus_tcp":
        return ModbusTcpCase(
            name=name,
            configured_timeout_s=0.5,
            loss_error=DeviceUnreachable,
            closed_port=await unused_port(),
        )
    if name == "modbus_rtu":
        return ModbusRtuCase(
            name=name,
            configured_timeout_s=0.2,
            loss_error=DeviceTimeout,  # a silent line: nothing says the units are gone
            directory=tmp_path,
        )
    if name in ("opcua_read", "opcua_subscribe"):
        return OpcUaCase(
            name=name,
            configured_timeout_s=2.0,
            loss_error=DeviceUnreachable,
            plant=request.getfixturevalue("opcua_plant"),
            mode="poll" if name == "opcua_read" else "subscribe",
            closed_port=await unused_port(),
        )
    if name == "can":
        return CanCase(
            name=name,
            configured_timeout_s=CAN_SLOWEST_STALE_S,
            loss_error=None,  # stale BAD samples, see the module docstring
            thread_prefix="can-recv",
        )
    raise AssertionError(f"no conformance case `{name}`")


@pytest.fixture(params=CASES)
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DriverCase]:
    name: str = request.param
    reason = KNOWN_FAILURES.get((request.function.__name__, name))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    built = await _build(name, request, tmp_path)
    await built.start_server()
    try:
        yield built
    finally:
        await built.release()


def test_every_protocol_of_the_table_has_a_conformance_case() -> None:
    """A protocol added to the table runs this suite too, or this fails."""
    assert set(CASE_PROTOCOLS.values()) == set(PROTOCOLS.names)


async def test_connects_and_reads_healthy_values(case: DriverCase) -> None:
    driver = case.make_driver()
    async with asyncio.timeout(READ_DEADLINE_S):
        async with driver, case.session(driver) as session:
            batch = await session.read_batch()
    tag_ids = {tag.id for tag in driver.tags()}
    assert len(tag_ids) >= 3
    assert [problem for record in batch for problem in healthy_problems(record, tag_ids)] == []
    assert {record.tag for record in batch} == tag_ids


async def test_exit_twice_and_exit_without_enter_are_harmless(case: DriverCase) -> None:
    never_entered = case.make_driver()
    await never_entered.__aexit__(None, None, None)
    await never_entered.__aexit__(None, None, None)

    driver = case.make_driver()
    async with asyncio.timeout(READ_DEADLINE_S):
        async with driver, case.session(driver) as session:
            assert await session.read_batch()
        await driver.__aexit__(None, None, None)
        await driver.__aexit__(None, None, None)


async def test_refused_connection_or_absent_device_is_a_driver_error(case: DriverCase) -> None:
    driver = case.make_unreachable_driver()
    # pytest.raises(DriverError) lets any library exception through: that fails the test.
    with pytest.raises(DriverError) as caught:
        async with asyncio.timeout(case.configured_timeout_s + HANG_MARGIN_S):
            await driver.__aenter__()
    assert isinstance(caught.value, case.unreachable_error), repr(caught.value)
    assert str(caught.value)  # a reason an operator can read
    # Exit after a failed enter is what a source task does on its way to the retry.
    await driver.__aexit__(None, None, None)
    await driver.__aexit__(None, None, None)


async def test_device_vanishing_mid_poll_gives_a_driver_error_or_bad_samples(
    case: DriverCase,
) -> None:
    driver = case.make_driver()
    loop = asyncio.get_running_loop()
    error: DriverError | None = None
    after: list[Record] = []
    async with asyncio.timeout(READ_DEADLINE_S + case.configured_timeout_s + HANG_MARGIN_S):
        async with driver, case.session(driver) as session:
            assert await session.read_batch()
            await case.stop_server()
            await case.settle_after_loss(session)
            started = loop.time()
            try:
                async with asyncio.timeout(case.configured_timeout_s + HANG_MARGIN_S):
                    after = await session.read_batch()
            except DriverError as exc:
                error = exc
            except TimeoutError:
                pytest.fail(
                    f"`{case.name}` hung: no error and no BAD samples within "
                    f"{case.configured_timeout_s} s + {HANG_MARGIN_S} s margin"
                )
            elapsed = loop.time() - started
    assert elapsed <= case.configured_timeout_s + HANG_MARGIN_S
    if case.loss_error is not None:
        assert isinstance(error, case.loss_error), f"{error!r}, batch {after!r}"
        assert str(error)
    else:
        assert error is None, repr(error)
        assert [problem for record in after for problem in lost_problems(record)] == []
        assert {record.tag for record in after} == {tag.id for tag in driver.tags()}


async def test_leaves_no_task_or_thread_behind(case: DriverCase) -> None:
    threads_before = set(threading.enumerate())
    tasks_before = set(asyncio.all_tasks())

    driver = case.make_driver()
    async with asyncio.timeout(READ_DEADLINE_S):
        async with driver, case.session(driver) as session:
            await session.read_batch()
            running = [t.name for t in threading.enumerate() if t not in threads_before]
            if case.thread_prefix is not None:  # the check below can fail
                assert any(name.startswith(case.thread_prefix) for name in running), running
        unreachable = case.make_unreachable_driver()
        with pytest.raises(DriverError):
            await unreachable.__aenter__()
        await unreachable.__aexit__(None, None, None)

    await asyncio.sleep(0)  # let cancelled tasks finish unwinding
    leftover_tasks = sorted(
        t.get_name() for t in asyncio.all_tasks() if t not in tasks_before and not t.done()
    )
    leftover_threads = sorted(
        t.name
        for t in threading.enumerate()
        if t not in threads_before and t.is_alive() and not _is_loop_executor_worker(t)
    )
    assert leftover_tasks == []
    assert leftover_threads == []


def _is_loop_executor_worker(thread: threading.Thread) -> bool:
    """A worker of the event loop's default executor (`loop.run_in_executor(None, ...)`,
    named `asyncio_<n>`): the loop owns it, reuses it for the next call and joins it when it
    closes, so it is not a thread the driver left behind."""
    return thread.name.startswith("asyncio_")


async def test_is_read_only_towards_the_device(case: DriverCase) -> None:
    driver = case.make_driver()
    async with asyncio.timeout(READ_DEADLINE_S):
        async with driver, case.session(driver) as session:
            # A poll repeats every read; a subscription delivers its values once.
            for _ in range(1 if session.streaming else 3):
                await session.read_batch()
    writes = await case.writes_seen()
    assert case.reads_seen() > 0  # the device side recorded the session at all
    assert writes == []


async def test_the_device_side_recorder_sees_a_write_from_another_client(case: DriverCase) -> None:
    """Positive control: the read-only check above can fail."""
    async with asyncio.timeout(READ_DEADLINE_S):
        await case.provoke_write()
        assert len(await case.writes_seen()) == 1
