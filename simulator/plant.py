"""The demo plant: one cooling-water pump seen through three protocols.

Its drive-end bearing fails on a script: at `bearing_fault_after_s` (22 s) an outer-race defect
starts and the damaged bearing runs hot. A repair reported for the pump (a
`repaired` ticket transition on the broker, `simulator.repairs`) replaces the bearing: the
temperature is back to normal and the defect is gone, so the gateway's verification can pass.

- Modbus TCP: bearing temperature, discharge pressure, speed and run state (`simulator.pump`),
  whose bearing temperature climbs past its 80 degC limit about 24.5 s after start.
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
from simulator.pump import PumpScript, run_pump_plant
from simulator.repairs import Repair, RepairFeed, watch_repairs
from simulator.vibration import FaultScenario, VibrationMachine

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 25_600.0
BLOCK_SIZE = 16_384
SPEED_RPM = 2950.0
# The asset both pump devices of the demo site name (configs/devices/pump-1*.yaml).
PUMP_ASSET = "pump-1"
BEARING_FAULT_AFTER_S = 22.0
# The damaged bearing runs hot as the defect starts, and fast. So the gateway has seen the pump
# healthy for most of the time before its two tickets open, and each ticket's pre-fault
# baseline (what the verification after the repair compares with) is the healthy pump rather
# than the fault's rise; and the two tickets open within a few seconds of each other, both
# before the first repair (which ends both symptoms).
OVERHEAT_RATE_DEGC_PER_S = 10.0


def pump_script(bearing_fault_after_s: float) -> PumpScript:
    return PumpScript(normal_s=bearing_fault_after_s, heat_rate_degc_per_s=OVERHEAT_RATE_DEGC_PER_S)


@dataclass(frozen=True, slots=True)
class Skf6205:
    """Drive-end bearing of the demo pump (geometry as in detectors/vibration/bearings.yaml, mm)."""

    balls: int = 9
    ball_diameter: float = 7.94
    pitch_diameter: float = 39.04
    contact_angle_deg: float = 0.0


async def run_vibration(
    server: OpcUaMachineServer,
    *,
    bearing_fault_after_s: float,
    block_period_s: float = 1.0,
    repaired: asyncio.Event | None = None,
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
    replaced = False
    while True:
        t = asyncio.get_running_loop().time() - started
        if repaired is not None and repaired.is_set() and not replaced:
            replaced = True
            machine.clear_fault(FaultCode.BEARING_OUTER_RACE)
            log.info("Pump drive-end bearing replaced: no defect from t = %.0f s.", t)
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
    bearing_fault_after_s: float = BEARING_FAULT_AFTER_S,
    repairs: RepairFeed | None = None,
    stop_event: asyncio.Event,
) -> None:
    """Serve the plant until `stop_event` is set. With `repairs`, a repair of the pump reported
    there replaces its bearing."""
    repaired = asyncio.Event()

    def on_repair(repair: Repair) -> None:
        repaired.set()  # the bearing is both symptoms' cause: one replacement ends them

    opcua = OpcUaMachineServer("Pump", host=host, port=opcua_port, sample_rate_hz=SAMPLE_RATE_HZ)
    await opcua.start()
    tasks = [
        asyncio.create_task(
            run_pump_plant(
                host,
                modbus_port,
                time_scale=time_scale,
                script=pump_script(bearing_fault_after_s),
                stop_event=stop_event,
                repaired=repaired,
            ),
            name="plant.modbus",
        ),
        asyncio.create_task(
            run_vibration(
                opcua, bearing_fault_after_s=bearing_fault_after_s / time_scale, repaired=repaired
            ),
            name="plant.vibration",
        ),
    ]
    if repairs is not None:
        tasks.append(
            asyncio.create_task(
                watch_repairs(repairs, frozenset({PUMP_ASSET}), on_repair), name="plant.repairs"
            )
        )
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
