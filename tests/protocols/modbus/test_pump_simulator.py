"""The demo pump: its script (pure) and the served registers (real server, real driver)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.core.records import Sample
from simulator.modbus_server import ModbusSimServer
from simulator.pump import PUMP_POINTS, PumpModel, PumpScript, run_pump_plant
from tests.support.modbus import make_driver, wait_until


def test_default_script_crosses_the_hi_limit_in_the_demo_window():
    script = PumpScript()
    crossing = script.crossing_time(80.0)
    assert crossing is not None and 15.0 <= crossing <= 20.0
    assert script.bearing_temp(crossing - 0.5) < 80.0 < script.bearing_temp(crossing + 0.5)
    assert script.bearing_temp(0.0) == script.bearing_temp(script.normal_s) == 55.0
    assert script.bearing_temp(1_000.0) == 88.0  # plateau between hi (80) and hihi (95)
    assert script.crossing_time(95.0) is None


def test_repair_cools_the_bearing_back_to_normal():
    script = PumpScript(cool_after_s=30.0)
    assert script.bearing_temp(30.0) == 88.0
    assert script.bearing_temp(31.0) == pytest.approx(85.5)
    assert script.bearing_temp(60.0) == 55.0
    assert PumpScript(normal_s=40.0, cool_after_s=30.0).crossing_time(80.0) is None


def test_noise_is_small_and_seeded():
    a, b = PumpModel(seed=7), PumpModel(seed=7)
    readings = [a.reading(t) for t in range(5)]
    assert readings == [b.reading(t) for t in range(5)]
    assert all(abs(r.bearing_temp_degc - 55.0) < 1.5 for r in readings)
    assert all(r.running for r in readings)
    quiet = PumpModel(PumpScript(noise=False)).reading(0.0)
    assert (quiet.bearing_temp_degc, quiet.motor_speed_rpm) == (55.0, 2950)


async def test_served_bearing_temperature_follows_the_time_scaled_script():
    ready: asyncio.Future[ModbusSimServer] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    plant = asyncio.create_task(
        run_pump_plant(
            "127.0.0.1",
            0,
            time_scale=50.0,
            stop_event=stop,
            update_period_s=0.01,
            on_ready=ready.set_result,
        ),
        name="pump-plant",
    )
    try:
        server = await asyncio.wait_for(ready, 5.0)
        temps: list[float] = []
        async with make_driver(server.port, PUMP_POINTS, device_id="pump-1") as driver:

            async def bearing_hot() -> None:
                while True:
                    samples = {s.tag: s for s in await driver.read() if isinstance(s, Sample)}
                    value = samples["pump-1.bearing_temp"].value
                    assert value is not None
                    temps.append(value)
                    if temps[-1] > 80.0:
                        return
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(bearing_hot(), 5.0)
        assert temps[-1] > 80.0
        assert temps[0] < 60.0  # it climbed (crossing at 18 / 50 = 0.36 s), it did not start hot
    finally:
        stop.set()
        await asyncio.wait_for(plant, 5.0)
    assert plant.done() and plant.exception() is None


async def test_plant_stops_cleanly_when_cancelled():
    ready: asyncio.Future[ModbusSimServer] = asyncio.get_running_loop().create_future()
    plant = asyncio.create_task(
        run_pump_plant("127.0.0.1", 0, on_ready=ready.set_result), name="pump-plant"
    )
    server = await asyncio.wait_for(ready, 5.0)
    assert server.running
    plant.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await plant
    await wait_until(lambda: not server.running)
