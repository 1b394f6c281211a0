"""A centrifugal pump whose bearing overheats on a script, served over Modbus TCP.

Register map (unit id: any; all ABCD word order):

    holding 0-1   bearing_temp        float32  degC
    holding 2-3   discharge_pressure  float32  bar
    input   0     motor_speed         uint16   rpm
    input   1     run_state           uint16   0 stopped, 1 running
    holding/input 100..  one point of every data type and word order (`type_pattern_points`)

The script: normal running for `normal_s`, then the bearing temperature climbs at
`heat_rate_degc_per_s` to a plateau past the hi limit; optionally it cools down again (a repair
on the script), or it is repaired when the plant is told so (`run_pump_plant(repaired=...)`).
With the defaults it crosses 80 degC 18 s after the start; `time_scale` runs it faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from protocols.modbus.config import DataType, ModbusPoint, RegisterTable, WordOrder
from simulator.modbus_server import ModbusSimServer, RegisterMap

log = logging.getLogger(__name__)

# The same points as configs/devices/pump-1.yaml (a test keeps the two equal).
PUMP_POINTS: tuple[ModbusPoint, ...] = tuple(
    ModbusPoint.model_validate(point)
    for point in (
        {"name": "bearing_temp", "table": "holding", "address": 0, "type": "float32",
         "unit": "degC"},
        {"name": "discharge_pressure", "table": "holding", "address": 2, "type": "float32",
         "unit": "bar"},
        {"name": "motor_speed", "table": "input", "address": 0, "type": "uint16", "unit": "rpm"},
        {"name": "run_state", "table": "input", "address": 1, "type": "uint16"},
    )
)  # fmt: skip

TYPE_PATTERN_ADDRESS = 100
# Values whose bytes all differ, so any byte or word mix-up shows as a different number.
_PATTERN_VALUES: dict[DataType, float] = {
    DataType.UINT16: 0x12AB,
    DataType.INT16: -4660,
    DataType.UINT32: 0x12345678,
    DataType.INT32: -123456789,
    DataType.UINT64: 0x123456789ABCDE00,  # exact in a float64 (Sample values are floats)
    DataType.INT64: -0x0123456789ABCDE0,
    DataType.FLOAT32: -1234.5,
    DataType.FLOAT64: -98765.4321,
}
REGISTER_TABLES = (RegisterTable.HOLDING, RegisterTable.INPUT)


def type_pattern_points() -> list[tuple[ModbusPoint, float]]:
    """One point per table x data type x word order, with the value the simulator serves."""
    pattern: list[tuple[ModbusPoint, float]] = []
    for table in REGISTER_TABLES:
        address = TYPE_PATTERN_ADDRESS
        for data_type, value in _PATTERN_VALUES.items():
            for order in WordOrder:
                point = ModbusPoint.model_validate(
                    {
                        "name": f"{table}_{data_type}_{order}".lower(),
                        "table": table,
                        "address": address,
                        "type": data_type,
                        "word_order": order,
                    }
                )
                pattern.append((point, value))
                address += data_type.registers
    return pattern


def write_type_pattern(registers: RegisterMap) -> None:
    for point, value in type_pattern_points():
        registers.write_value(point.table, point.address, value, point.type, point.word_order)


@dataclass(frozen=True, slots=True)
class PumpScript:
    """What happens when, in script seconds (real seconds times the time scale)."""

    normal_s: float = 8.0
    heat_rate_degc_per_s: float = 2.5
    normal_bearing_degc: float = 55.0
    hot_bearing_degc: float = 88.0  # past the hi limit (80), below hihi (95)
    cool_after_s: float | None = None  # the bearing is repaired and cools from here
    cool_rate_degc_per_s: float = 2.5
    # The bearing replaced: from here it runs at its normal temperature and the fault is gone.
    # The hours of a real repair (pump stopped, bearing changed, run in) are compressed into
    # the moment the technician reports it.
    repaired_at_s: float | None = None
    normal_pressure_bar: float = 4.2
    speed_rpm: int = 2950
    noise: bool = True

    def bearing_temp(self, t: float) -> float:
        """The noiseless bearing temperature at script time `t`."""
        if self.repaired_at_s is not None and t >= self.repaired_at_s:
            return self.normal_bearing_degc

        def heated(at: float) -> float:
            rise = max(0.0, at - self.normal_s) * self.heat_rate_degc_per_s
            return min(self.hot_bearing_degc, self.normal_bearing_degc + rise)

        if self.cool_after_s is None or t <= self.cool_after_s:
            return heated(t)
        drop = (t - self.cool_after_s) * self.cool_rate_degc_per_s
        return max(self.normal_bearing_degc, heated(self.cool_after_s) - drop)

    def crossing_time(self, limit_degc: float) -> float | None:
        """Script time at which the bearing first passes `limit_degc`, None if never."""
        if limit_degc >= self.hot_bearing_degc:
            return None
        if limit_degc < self.normal_bearing_degc:
            return 0.0
        crossing = self.normal_s + (limit_degc - self.normal_bearing_degc) / (
            self.heat_rate_degc_per_s
        )
        for repaired in (self.cool_after_s, self.repaired_at_s):
            if repaired is not None and crossing > repaired:
                return None
        return crossing


@dataclass(frozen=True, slots=True)
class PumpReading:
    bearing_temp_degc: float
    discharge_pressure_bar: float
    motor_speed_rpm: int
    running: bool


class PumpModel:
    def __init__(self, script: PumpScript | None = None, seed: int | None = 1) -> None:
        self.script = script or PumpScript()
        self._rng = random.Random(seed)

    def repair(self, t: float) -> None:
        """The bearing is replaced at script time `t` (once: a later repair changes nothing)."""
        if self.script.repaired_at_s is None:
            self.script = replace(self.script, repaired_at_s=t)

    def reading(self, t: float) -> PumpReading:
        s = self.script
        temp = s.bearing_temp(t)
        # A hot bearing drags: the discharge pressure sags a little as it heats.
        pressure = s.normal_pressure_bar - 0.01 * (temp - s.normal_bearing_degc)
        speed = float(s.speed_rpm)
        if s.noise:
            temp += self._rng.gauss(0.0, 0.2)
            pressure += self._rng.gauss(0.0, 0.02)
            speed += self._rng.gauss(0.0, 2.0)
        return PumpReading(
            bearing_temp_degc=temp,
            discharge_pressure_bar=pressure,
            motor_speed_rpm=max(0, round(speed)),
            running=True,
        )

    @staticmethod
    def write(registers: RegisterMap, reading: PumpReading) -> None:
        bearing, pressure, speed, state = PUMP_POINTS
        values = (
            (bearing, reading.bearing_temp_degc),
            (pressure, reading.discharge_pressure_bar),
            (speed, reading.motor_speed_rpm),
            (state, 1 if reading.running else 0),
        )
        for point, value in values:
            registers.write_value(point.table, point.address, value, point.type, point.word_order)


def pump_registers() -> RegisterMap:
    """A register map laid out for the pump, with the type pattern already written."""
    registers = RegisterMap(holding=256, input=256)
    write_type_pattern(registers)
    return registers


async def run_pump_plant(
    host: str,
    port: int,
    *,
    time_scale: float = 1.0,
    stop_event: asyncio.Event | None = None,
    script: PumpScript | None = None,
    unit_id: int = 0,
    update_period_s: float = 0.1,
    seed: int | None = 1,
    on_ready: Callable[[ModbusSimServer], None] | None = None,
    repaired: asyncio.Event | None = None,
) -> None:
    """Serve the pump until `stop_event` is set (or the task is cancelled).

    The model advances `time_scale` script seconds per real second and rewrites the registers
    every `update_period_s` real seconds. `on_ready` receives the server once it listens (its
    `port` is the real one when `port` was 0). Once `repaired` is set, the bearing is replaced
    (`PumpModel.repair`).
    """
    if time_scale <= 0 or update_period_s <= 0:
        raise ValueError("time_scale and update_period_s must be positive")
    stop = stop_event or asyncio.Event()
    model = PumpModel(script, seed)
    registers = pump_registers()
    loop = asyncio.get_running_loop()
    model.write(registers, model.reading(0.0))
    async with ModbusSimServer(registers, host=host, port=port, unit_id=unit_id) as server:
        crossing = model.script.crossing_time(80.0)
        log.info(
            "Pump simulator serving at %s:%d; bearing temperature passes 80 degC after %s.",
            host,
            server.port,
            "never" if crossing is None else f"{crossing / time_scale:.1f} s",
        )
        if on_ready is not None:
            on_ready(server)
        started = loop.time()
        heating_logged = False
        while not stop.is_set():
            t = (loop.time() - started) * time_scale
            if repaired is not None and repaired.is_set() and model.script.repaired_at_s is None:
                model.repair(t)
                log.info(
                    "Pump simulator: bearing replaced; back to %.0f degC (script time %.0f s).",
                    model.script.normal_bearing_degc,
                    t,
                )
            model.write(registers, model.reading(t))
            if not heating_logged and t >= model.script.normal_s:
                heating_logged = True
                log.info("Pump simulator: the bearing starts to overheat (script time %.0f s).", t)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), update_period_s)
    log.info("Pump simulator stopped.")
