"""Recovery scenarios (issue 11, item 6), shared by `tests/faults/test_recovery.py` and
`bench/recovery.py`: a real server goes away long enough for the backoff to grow, comes back,
and each scenario returns the seconds until the source delivers a good sample again. The
sources are built from device files by the protocol plugins as the daemon builds them, with the
shipped backoff (1 s doubling to 60 s).

"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.assembly import plant
from gateway.config.loader import load_config
from gateway.core.clock import SystemClock
from gateway.core.interfaces import Record
from gateway.core.records import Quality
from gateway.pipeline.sources import Source, build_sources
from simulator.modbus_server import ModbusSimServer
from simulator.pump import PumpModel, PumpReading, pump_registers
from tests.support.broker import free_loopback_port
from tests.support.opcua import ThreadedServer
from tests.support.site import REPO

# Long enough that the backoff has grown well past the targets: retries after 1, 3, 7, 15 and
# 31 s (each +-20 %), so without the probe the return at 20 s waits about 11 s for the next.
OUTAGE_S = 20.0


def site(tmp_path: Path, device: str) -> Path:
    (tmp_path / "devices").mkdir()
    (tmp_path / "gateway.yaml").write_text("site: s\ngateway_id: g\n")
    (tmp_path / "devices" / "device.yaml").write_text(device)
    return tmp_path / "gateway.yaml"


def sources_of(gateway_yaml: Path, queue: asyncio.Queue[Record]) -> list[Source]:
    loaded = load_config(gateway_yaml)
    devices = plant.configured_devices(loaded.devices, loaded.protocols)
    clock = SystemClock()
    return build_sources(plant.endpoints(devices, clock), queue, clock)


async def seconds_to_first_good(queue: asyncio.Queue[Record], limit_s: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        while (await queue.get()).quality is not Quality.GOOD:
            pass
    return time.monotonic() - started


async def drain_until_bad(queue: asyncio.Queue[Record]) -> None:
    async with asyncio.timeout(10):
        while (await queue.get()).quality is not Quality.BAD:
            pass


async def modbus_recovery_s(tmp_path: Path) -> float:
    registers = pump_registers()
    PumpModel.write(registers, PumpReading(60.0, 2.0, 1480, True))
    server = ModbusSimServer(registers, port=free_loopback_port())
    await server.start()
    device = (
        "id: pump-1\n"
        f"connection: {{protocol: modbus_tcp, host: 127.0.0.1, port: {server.port},"
        " timeout_s: 0.3}\n"
        "poll_period_s: 0.5\n"
        "points: [{name: bearing_temp, address: 0, type: float32}]\n"
    )
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10_000)
    [source] = sources_of(site(tmp_path, device), queue)
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        await seconds_to_first_good(queue, 10)
        await server.stop()
        await drain_until_bad(queue)
        await asyncio.sleep(OUTAGE_S)
        await server.start()
        while not queue.empty():
            queue.get_nowait()
        recovered = await seconds_to_first_good(queue, 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
    # The backoff is kept while down: no retry storm (about 5 attempts in 20 s).
    errors = source.statistics()[0].errors
    if errors > 8:
        raise AssertionError(f"{errors} failed attempts during a {OUTAGE_S:g} s outage")
    return recovered


@contextlib.contextmanager
def opcua_plant() -> Iterator[ThreadedServer]:
    server = ThreadedServer(machine="Press").start()
    try:
        yield server
    finally:
        server.stop()


async def opcua_recovery_s(tmp_path: Path, opcua_plant: ThreadedServer) -> float:
    sim = opcua_plant.sim
    device = (
        "id: press\n"
        f"connection: {{protocol: opcua, endpoint: '{sim.endpoint}', timeout_s: 2}}\n"
        "poll_period_s: 5\n"
        f"nodes: [{{name: speed, node_id: '{sim.node_id('Speed')}', mode: poll}}]\n"
    )
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10_000)
    [source] = sources_of(site(tmp_path, device), queue)
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        await seconds_to_first_good(queue, 20)
        await opcua_plant.call(sim.stop())
        await drain_until_bad(queue)
        await asyncio.sleep(OUTAGE_S)
        await opcua_plant.call(sim.start())
        while not queue.empty():
            queue.get_nowait()
        recovered = await seconds_to_first_good(queue, 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return recovered


async def start_can_plant(gateway_tty: Path) -> asyncio.subprocess.Process:
    """The CAN side of the demo plant in its own process: a simulated USB-CAN adapter (slcan)
    at the far end of a socat pty pair whose near end is `gateway_tty`."""
    plant_process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator.can_bus", "--gateway-tty", str(gateway_tty),
        "--period-s", "0.02", cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(10):
        while not os.path.islink(gateway_tty):  # noqa: ASYNC110, ASYNC240 (another process makes it)
            await asyncio.sleep(0.02)
    return plant_process


async def stop_can_plant(plant_process: asyncio.subprocess.Process) -> None:
    if plant_process.returncode is None:
        plant_process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await plant_process.wait()


async def can_recovery_s(tmp_path: Path) -> float:
    gateway_tty = tmp_path / "can-gw"
    dbc = REPO / "simulator" / "demo_machine.dbc"
    device = (
        "id: motor-1\n"
        f"connection: {{protocol: can, interface: slcan, channel: '{gateway_tty}',"
        f" bitrate: 500000, dbc: '{dbc}'}}\n"
        "signals: [{name: speed, message: MotorData, signal: SpeedRpm}]\n"
    )
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10_000)
    plant_process = await start_can_plant(gateway_tty)
    [source] = sources_of(site(tmp_path, device), queue)
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        await seconds_to_first_good(queue, 20)
        await stop_can_plant(plant_process)  # the adapter unplugged: its tty is gone
        await drain_until_bad(queue)
        await asyncio.sleep(OUTAGE_S)
        plant_process = await start_can_plant(gateway_tty)
        while not queue.empty():
            queue.get_nowait()
        recovered = await seconds_to_first_good(queue, 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stop_can_plant(plant_process)
    return recovered


# --- the uplink (issue 11, item 6) -----------------------------------------------------------

# The shipped uplink settings that decide recovery (UplinkSettings and gateway.yaml defaults).
SHIPPED_UPLINK = {
    "keepalive_s": 30,
    "ack_timeout_s": 15.0,
    "reconnect_min_s": 0.5,
    "reconnect_max_s": 30.0,
    "resend_interval_s": 30.0,
}


async def uplink_recovery_s(tmp_path: Path, blackout_s: float) -> float:
    """A real mosquitto behind a proxy that black-holes the link for `blackout_s` while
    tickets keep opening, then passes traffic again. Returns the seconds from the link
    clearing to the uplink connected (and subscribed) again; fails if a ticket message
    committed meanwhile does not reach the central system.

    Shorter than the ack timeout (15 s), the blackout leaves the session connected and
    half-open when the link clears; longer, the uplink has dropped it and its connection
    attempts vanish in the black hole too."""
    from tests.faults.support import (
        StallingProxy,
        TicketProducer,
        delivered_ids,
        make_uplink,
        open_state,
        running_central,
    )
    from tests.support.broker import MosquittoBroker
    from tests.uplink.helpers import eventually, running

    with MosquittoBroker() as broker:
        state = await open_state(tmp_path)
        producer = TicketProducer(state)
        try:
            async with StallingProxy(broker.port) as proxy:
                uplink = make_uplink(state, proxy.port, **SHIPPED_UPLINK)
                async with (
                    running_central(broker.port) as central,
                    running(uplink.run_uplink(), "uplink"),
                ):
                    await eventually(lambda: uplink.statistics().connected, timeout=20)
                    await producer.open_one()
                    await eventually(lambda: len(central.received) == 1, timeout=20)
                    proxy.blackhole()
                    stop = asyncio.Event()
                    opening = asyncio.create_task(producer.run_opening(0.5, stop))
                    await asyncio.sleep(blackout_s)
                    connects = uplink.statistics().connects
                    proxy.restore()
                    cleared = time.monotonic()
                    await eventually(lambda: uplink.statistics().connects > connects, timeout=90)
                    recovered = time.monotonic() - cleared
                    stop.set()
                    await opening
                    await eventually(
                        lambda: set(producer.committed) <= set(delivered_ids(central)),
                        timeout=60,
                    )
            missing = set(producer.committed) - set(delivered_ids(central))
            assert not missing, f"{len(missing)} ticket message(s) lost"
            return recovered
        finally:
            await state.close()
