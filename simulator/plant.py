"""The demo plant: one cooling-water pump seen through two protocols.

- Modbus TCP: bearing temperature, discharge pressure, speed and run state (`simulator.pump`),
  whose bearing temperature climbs past its 80 degC limit about 18 s after start.
- CAN: the pump motor's drive controller (speed, current, winding temperature, DC link,
  status) through a simulated USB-CAN adapter speaking slcan on a pseudo-terminal pair.
- OPC UA: the drive-end accelerometer of the same pump as an array node (16384 samples at
  25.6 kHz, a new block every second) and its speed; an outer-race defect of the SKF 6205
  bearing appears after `bearing_fault_after_s` and grows (`simulator.vibration`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from gateway.core.records import FaultCode
from simulator.can_bus import run_can_plant
from simulator.opcua_server import OpcUaMachineServer
from simulator.pump import run_pump_plant
from simulator.vibration import FaultScenario, VibrationMachine

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 25_600.0
BLOCK_SIZE = 16_384
SPEED_RPM = 2950.0


@dataclass(frozen=True, slots=True)
class Skf6205:
    """Drive-end bearing of the demo pump (geometry as in detectors/vibration/bearings.yaml, mm)."""

    balls: int = 9
    ball_diameter: float = 7.94
    pitch_diameter: float = 39.04
    contact_angle_deg: float = 0.0


async def run_vibration(
    server: OpcUaMachineServer, *, bearing_fault_after_s: float, block_period_s: float = 1.0
) -> None:
    machine = VibrationMachine(SAMPLE_RATE_HZ, BLOCK_SIZE, SPEED_RPM / 60.0, Skf6205(), seed=3)
    FaultScenario(
        healthy_s=bearing_fault_after_s,
        fault=FaultCode.BEARING_OUTER_RACE,
        onset_severity=0.03,
        per_hour=2.0,
    ).apply(machine)
    await server.set_value("VibrationSampleRate", SAMPLE_RATE_HZ)
    started = asyncio.get_running_loop().time()
    announced = False
    while True:
        t = asyncio.get_running_loop().time() - started
        block = await asyncio.to_thread(machine.next_block, t)
        await server.set_value("Speed", machine.speed_hz * 60.0)
        await server.set_value("Vibration", block.tolist())
        if not announced and t >= bearing_fault_after_s:
            announced = True
            log.info("Pump drive-end bearing: an outer-race defect has started (t = %.0f s).", t)
        await asyncio.sleep(block_period_s)


async def run_plant(
    host: str,
    modbus_port: int,
    opcua_port: int,
    *,
    can_tty: str | None = None,
    time_scale: float = 1.0,
    bearing_fault_after_s: float = 20.0,
    stop_event: asyncio.Event,
) -> None:
    opcua = OpcUaMachineServer("Pump", host=host, port=opcua_port, sample_rate_hz=SAMPLE_RATE_HZ)
    await opcua.start()
    tasks = [
        asyncio.create_task(
            run_pump_plant(host, modbus_port, time_scale=time_scale, stop_event=stop_event),
            name="plant.modbus",
        ),
        asyncio.create_task(
            run_vibration(opcua, bearing_fault_after_s=bearing_fault_after_s / time_scale),
            name="plant.vibration",
        ),
    ]
    if can_tty is not None:
        tasks.append(
            asyncio.create_task(
                run_can_plant(Path(can_tty), stop_event=stop_event), name="plant.can"
            )
        )
    try:
        await stop_event.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await opcua.stop()
