"""Restarts tell the truth (issue 11, item 5), with the gateway as a real subprocess, a real
mosquitto, the pymodbus server and the simulated central system: the pump's bearing runs hot,
a ticket opens; the gateway goes away (SIGKILL, a normal stop and start, or a SIGHUP reload with
an unchanged configuration) and, during the gap, the bearing cools down or stays hot.

- Cooled in the gap: the ticket gets `condition_cleared` once the gateway is back (0 stuck).
- Still hot: the restart adds no "retriggered" update; the ticket stays active.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from simulator.central import CentralSystem
from simulator.modbus_server import ModbusSimServer
from simulator.pump import PumpModel, PumpReading, pump_registers
from tests.faults.support import running_central
from tests.support.broker import MosquittoBroker, free_loopback_port
from tests.support.site import REPO, make_site

pytestmark = [pytest.mark.broker, pytest.mark.slow]

HOT = PumpReading(90.0, 2.0, 1480, True)
NORMAL = PumpReading(60.0, 2.0, 1480, True)


def gateway_process(gateway_yaml: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", str(gateway_yaml)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip


async def ended(process: subprocess.Popen[bytes]) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), 15)


def retriggered(central: CentralSystem) -> list[object]:
    return [
        r for r in central.received
        if r.kind == "updated" and r.data.get("change", {}).get("reason") == "retriggered"
    ]  # fmt: skip


def cleared(central: CentralSystem) -> list[object]:
    return [r for r in central.received if r.kind == "condition_cleared"]


async def wait_for(central: CentralSystem, ok: Callable[[CentralSystem], bool], s: float) -> None:
    await asyncio.wait_for(central.wait_until(ok), s)


class Plant:
    def __init__(self, tmp_path: Path, server: ModbusSimServer, broker: MosquittoBroker) -> None:
        self.tmp_path, self.server = tmp_path, server
        # The shipped pump rule (hi 80 degC, off-delay 5 s) with a 0.6 s on-delay and a
        # 0.2 s poll period, so that the scenario runs in seconds.
        self.gateway_yaml = make_site(
            tmp_path, broker_port=broker.port, modbus_port=server.port, poll_period_s=0.2
        )
        self.log = tmp_path / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def set(self, reading: PumpReading) -> None:
        PumpModel.write(self.server.registers, reading)

    def start(self) -> None:
        self.process = gateway_process(self.gateway_yaml, self.log)

    async def stop(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        await ended(self.process)


@pytest.fixture
async def plant(tmp_path: Path) -> AsyncIterator[tuple[Plant, CentralSystem]]:
    with MosquittoBroker() as broker:
        registers = pump_registers()
        async with ModbusSimServer(registers, port=free_loopback_port()) as server:
            plant = Plant(tmp_path, server, broker)
            async with running_central(broker.port, "edge-01") as central:
                yield plant, central
            if plant.process is not None and plant.process.poll() is None:
                plant.process.kill()
                await ended(plant.process)


async def hot_ticket(plant: Plant, central: CentralSystem) -> None:
    plant.set(HOT)
    plant.start()
    await wait_for(central, lambda c: any(r.kind == "opened" for r in c.received), 30)
    await asyncio.sleep(1.0)  # the condition is committed active; its ack round trip done


@pytest.mark.parametrize("gap", ["sigkill", "stop-start", "reload"])
async def test_a_bearing_that_cooled_during_the_gap_clears_its_ticket(
    plant: tuple[Plant, CentralSystem], gap: str
) -> None:
    site, central = plant
    await hot_ticket(site, central)
    if gap == "reload":
        site.set(NORMAL)  # cools while the pipeline restarts in-process
        assert site.process is not None
        site.process.send_signal(signal.SIGHUP)
    else:
        await site.stop(signal.SIGKILL if gap == "sigkill" else signal.SIGTERM)
        site.set(NORMAL)
        site.start()
    # The 5 s off-delay runs on fresh samples; then the ticket says the condition cleared.
    await wait_for(central, lambda c: bool(cleared(c)), 30)
    assert retriggered(central) == []
    await site.stop(signal.SIGTERM)


@pytest.mark.parametrize("gap", ["sigkill", "stop-start", "reload"])
async def test_a_bearing_still_hot_after_the_gap_is_not_a_re_trigger(
    plant: tuple[Plant, CentralSystem], gap: str
) -> None:
    site, central = plant
    await hot_ticket(site, central)
    if gap == "reload":
        assert site.process is not None
        site.process.send_signal(signal.SIGHUP)
    else:
        await site.stop(signal.SIGKILL if gap == "sigkill" else signal.SIGTERM)
        site.start()
    # Polling again and past the rule's on-delay (0.6 s) several times over: nothing to say.
    await asyncio.sleep(4)
    assert site.process is not None and site.process.poll() is None
    assert retriggered(central) == [] and cleared(central) == []
    site.set(NORMAL)
    await wait_for(central, lambda c: bool(cleared(c)), 30)
    await site.stop(signal.SIGTERM)
