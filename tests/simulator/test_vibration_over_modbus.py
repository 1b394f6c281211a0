"""Issue 4, item 5: the simulator's machines served as a Modbus waveform block (as smart
vibration sensors expose them), read by the real Modbus driver from the real pymodbus server,
and diagnosed by the vibration detector with the right fault code."""

from __future__ import annotations

import numpy as np

from detectors.vibration.catalogue import BearingCatalogue
from detectors.vibration.detector import VibrationDetector
from gateway.core.clock import ManualClock
from gateway.core.records import FaultCode, Waveform
from protocols.modbus.config import RegisterTable
from simulator.vibration import VibrationMachine
from tests.support.modbus import ModbusSimServer, RegisterMap, make_driver, point

SAMPLE_RATE_HZ = 12_800
BLOCK = 8192
G_PER_COUNT = 0.0005  # int16 counts, +-16 g, as a typical MEMS vibration sensor
SHAFT_HZ = 2950 / 60


def serve_block(registers: RegisterMap, block_g: np.ndarray) -> None:
    counts = np.clip(np.round(block_g / G_PER_COUNT), -32768, 32767).astype(np.int64)
    registers.write(RegisterTable.HOLDING, 100, [int(c) & 0xFFFF for c in counts])


async def test_outer_race_fault_served_as_a_modbus_waveform_block_opens_the_right_finding():
    bearing = BearingCatalogue.load().get("SKF-6205")
    machine = VibrationMachine(SAMPLE_RATE_HZ, BLOCK, SHAFT_HZ, bearing, seed=5)
    registers = RegisterMap(holding=100 + BLOCK, input=8)
    registers.write(RegisterTable.HOLDING, 0, [SAMPLE_RATE_HZ])
    points = [
        point(name="rate", address=0, unit="Hz"),
        point(name="accel", address=100, type="int16", scale=G_PER_COUNT, unit="g",
              waveform={"samples": BLOCK, "sample_rate_point": "rate"}),
    ]  # fmt: skip
    detector = VibrationDetector(
        asset="pump-9", tag_id="pump-9.accel", geometry=bearing, fixed_rpm=2950, confirm_blocks=3
    )
    findings = []
    # The sensor publishes a fresh block every block period and the poll follows it: blocks
    # read closer together than that would repeat samples and not confirm each other.
    clock = ManualClock()
    async with ModbusSimServer(registers) as server, make_driver(
        server.port, points, device_id="pump-9", clock=clock
    ) as driver:
        for block_index in range(10):
            clock.advance(BLOCK / SAMPLE_RATE_HZ)
            if block_index == 4:  # healthy first, then the defect appears
                machine.set_fault(FaultCode.BEARING_OUTER_RACE, 0.05)
            serve_block(registers, machine.next_block())
            waveforms = [r for r in await driver.read() if isinstance(r, Waveform)]
            assert len(waveforms) == 1
            wave = waveforms[0]
            assert wave.sample_rate == SAMPLE_RATE_HZ and wave.data.size == BLOCK
            findings += [(block_index, f) for f in detector.update(wave)]
    raised = [(i, f) for i, f in findings if f.active]
    assert raised, "the outer-race defect read over Modbus was not diagnosed"
    first_block, first = raised[0]
    assert first.fault_code == FaultCode.BEARING_OUTER_RACE
    assert first_block == 6, "confirmed on the third faulty block"
    assert "BPFO" in first.message
