"""`edge-gateway probe` (issue 15) as an engineer runs it, a subprocess, against the project's
real simulator servers: the pymodbus server (TCP, and RTU over a socat pty pair), the asyncua
server, and the slcan adapter simulator. Output, exit codes, and read-only proven from the
server side."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from protocols.modbus.config import RegisterTable
from simulator.can_bus import CanMachine
from simulator.modbus_server import RegisterMap
from simulator.ptypair import pty_pair
from simulator.pump import pump_registers
from simulator.slcan import SlcanAdapter
from tests.support.modbus import ModbusSimServer, unused_port
from tests.support.modbus import pty_pair as rtu_pty_pair
from tests.support.opcua import ThreadedServer
from tests.support.site import REPO

PUMP = """\
id: pump-1
asset: {{id: pump-1, class: pump}}
connection: {{protocol: modbus_tcp, host: 127.0.0.1, port: {port}, unit_id: 1, timeout_s: 0.3}}
poll_period_s: {period}
points:
  - {{name: bearing_temp, table: holding, address: 0, type: float32, unit: degC}}
  - {{name: motor_speed, table: input, address: 0, unit: rpm}}
  - {{name: run_state, table: input, address: 1, enum: {{0: stopped, 1: running}}}}
{extra}"""


async def probe(*args: str, cwd: Path = REPO) -> tuple[int, str, str]:
    """Run `python -m gateway probe ...` without blocking this test's event loop, which
    serves the simulators."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "probe", *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def pump_map() -> RegisterMap:
    registers = pump_registers()
    registers.write_value(RegisterTable.HOLDING, 0, 61.25, "float32")  # type: ignore[arg-type]
    registers.write(RegisterTable.INPUT, 0, [2950, 1])
    return registers


def rows(output: str) -> dict[str, list[str]]:
    """The table's rows by point name, split on runs of two or more spaces."""
    import re

    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("point "))
    table = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        table[cells[0]] = cells
    return table


# --- Modbus TCP ------------------------------------------------------------------------------


async def test_modbus_points_are_printed_with_raw_registers_value_unit_and_label(tmp_path):
    async with ModbusSimServer(pump_map()) as server:
        device = tmp_path / "pump-1.yaml"
        device.write_text(PUMP.format(port=server.port, period=1, extra=""))
        code, out, err = await probe(str(device))
        requests = list(server.requests)
    assert (code, err) == (0, ""), out
    table = rows(out)
    assert table["bearing_temp"][1:4] == ["0x4275 0x0000", "61.25 degC", "GOOD"]
    assert table["motor_speed"][1:4] == ["0x0B86", "2950 rpm", "GOOD"]
    assert table["run_state"][1:4] == ["0x0001", "1 (running)", "GOOD"]
    assert "holding 0+2 (function 3): bearing_temp" in out
    assert "input 0+2 (function 4): motor_speed, run_state" in out
    assert "3 points: 3 GOOD, 0 UNCERTAIN, 0 BAD, 0 without a sample" in out
    # Read-only, from the server's side: one poll, read function codes only; and nothing
    # written beside the device file (no state.db, no telemetry.db).
    assert sorted(r.function_code for r in requests) == [3, 4]
    assert os.listdir(tmp_path) == ["pump-1.yaml"]


async def test_modbus_bad_and_uncertain_points_exit_65_with_their_reasons(tmp_path):
    registers = pump_map()
    registers.write(RegisterTable.INPUT, 1, [5])  # a run state nobody put in the enum
    async with ModbusSimServer(registers) as server:
        device = tmp_path / "pump-1.yaml"
        extra = "  - {name: flow, table: holding, address: 3000, unit: m3/h}\n"
        device.write_text(PUMP.format(port=server.port, period=1, extra=extra))
        code, out, _ = await probe(str(device), "--json")
    assert code == 65
    report = json.loads(out)
    points = {p["name"]: p for p in report["points"]}
    assert points["flow"]["quality"] == "BAD" and points["flow"]["value"] is None
    assert points["flow"]["reason"] == (
        "exception 2 (illegal data address) reading 1 at holding 3000"
    )
    assert points["run_state"]["quality"] == "UNCERTAIN" and points["run_state"]["value"] == 5
    assert points["run_state"]["reason"] == "state 5 is not in the configured enumeration"
    assert points["bearing_temp"]["quality"] == "GOOD"
    assert report["exit_code"] == 65 and report["connected"] is True


async def test_an_unreachable_device_exits_69_and_a_bad_file_78(tmp_path):
    device = tmp_path / "pump-1.yaml"
    device.write_text(PUMP.format(port=await unused_port(), period=1, extra=""))
    code, out, _ = await probe(str(device))
    assert code == 69
    assert "Device unreachable: connection refused" in out
    device.write_text(PUMP.format(port='"502"', period=1, extra=""))
    code, out, err = await probe(str(device))
    assert (code, out) == (78, "")
    assert "connection.port: input should be a valid integer, got '502'" in err


async def test_probe_for_a_while_polls_at_the_device_period_and_counts_readings(tmp_path):
    async with ModbusSimServer(pump_map()) as server:
        device = tmp_path / "pump-1.yaml"
        device.write_text(PUMP.format(port=server.port, period=0.5, extra=""))
        code, out, _ = await probe(str(device), "--for", "1.5", "--json")
        requests = list(server.requests)
    assert code == 0
    report = json.loads(out)
    assert report["polls"] == 3  # at 0, 0.5 and 1 s
    assert {p["readings"] for p in report["points"]} == {3}
    assert len(requests) == 2 * 3 and {r.function_code for r in requests} == {3, 4}


# --- Modbus RTU: a unit on a line ---------------------------------------------------------


async def test_a_unit_on_an_rtu_line_is_probed_through_its_line(tmp_path):
    async with rtu_pty_pair(tmp_path) as (gateway_end, device_end):
        registers = pump_map()
        async with ModbusSimServer(units={3: registers}, serial_port=device_end) as server:
            device = tmp_path / "compressor.yaml"
            device.write_text(
                "id: compressor-1\n"
                f"connection: {{protocol: modbus_rtu, port: {gateway_end}, unit_id: 3,"
                " baudrate: 115200, parity: N, timeout_s: 0.3}\n"
                "points:\n  - {name: temp, address: 0, type: float32, unit: degC}\n"
            )
            code, out, _ = await probe(str(device))
            requests = list(server.requests)
    assert code == 0, out
    assert rows(out)["temp"][1:4] == ["0x4275 0x0000", "61.25 degC", "GOOD"]
    assert "unit 3 on modbus_rtu://" in out
    assert [(r.function_code, r.unit_id) for r in requests] == [(3, 3)]


# --- OPC UA -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def opcua_server():  # type: ignore[no-untyped-def]
    server = ThreadedServer().start()
    yield server
    server.stop()


async def test_opcua_nodes_and_a_mistyped_node_id(opcua_server: ThreadedServer, tmp_path):
    sim = opcua_server.sim
    await opcua_server.call(sim.set_value("Temperature", 47.5))
    before = dict(sim.requests)
    device = tmp_path / "vib.yaml"
    device.write_text(
        "id: pump-1-vib\n"
        f"connection: {{protocol: opcua, endpoint: '{sim.endpoint}',"
        " publishing_interval_ms: 100}\n"
        "nodes:\n"
        "  - {name: temp, node_id: 'ns=2;s=Pump.Temperature', unit: degC}\n"
        "  - {name: pressure, node_id: 'ns=2;s=Pump.Pressure', unit: bar, mode: poll}\n"
        "  - {name: vib, node_id: 'ns=2;s=Pump.Vibration', kind: waveform,"
        " sample_rate_node: 'ns=2;s=Pump.VibrationSampleRate', unit: g}\n"
        "  - {name: speed, node_id: 'ns=2;s=Pump.Sped', unit: rpm}\n"
    )
    code, out, _ = await probe(str(device))
    assert code == 65, out
    table = rows(out)
    assert table["temp"][1:4] == ["Double 47.5", "47.5 degC", "GOOD"]
    assert table["pressure"][1:4] == ["Double 4.2", "4.2 bar", "GOOD"]
    assert table["vib"][1].startswith("Double[4096]") and table["vib"][2].startswith(
        "4096 samples at 12800 Hz, RMS"
    )
    assert table["speed"][1] == "BAD" and table["speed"][-1] == "not monitored: BadNodeIdUnknown"
    assert "subscription, publishing every 100 ms:" in out and "Read every 1 s:" in out
    after = dict(sim.requests)
    assert sim.mutating_requests() == {} and after.get("read", 0) > before.get("read", 0)


# --- CAN over the slcan simulator -------------------------------------------------------


async def test_can_signals_with_frame_bytes_and_dbc_value_labels(tmp_path):
    stop = asyncio.Event()
    async with (
        pty_pair(tmp_path / "plant", tmp_path / "gw") as pair,
        CanMachine(str(pair.plant_end), interface="slcan") as machine,
    ):
        runner = asyncio.create_task(machine.run(stop), name="can-machine")
        try:
            device = tmp_path / "motor-1.yaml"
            device.write_text(
                "id: motor-1\n"
                f"connection: {{protocol: can, interface: slcan, channel: {pair.gateway_end},"
                f" bitrate: 500000, dbc: {REPO / 'configs/devices/demo_machine.dbc'}}}\n"
                "signals:\n"
                "  - {name: speed, message: MotorData, signal: SpeedRpm}\n"
                "  - {name: state, message: MotorStatus, signal: State}\n"
                "  - {name: hours, message: MotorStatus, signal: OperatingHours}\n"
            )
            code, out, _ = await probe(str(device))
        finally:
            stop.set()
            await runner
        adapter = machine.bus
        assert isinstance(adapter, SlcanAdapter)
        sent_by_gateway = adapter.statistics().frames_from_host
    assert code == 0, out
    table = rows(out)
    assert table["speed"][1].startswith("MotorData 0x100: ") and table["speed"][2:4] == [
        "1480 rpm", "GOOD"
    ]
    assert table["state"][2:4] == ["1 (Running)", "GOOD"]
    assert table["state"][1].startswith("MotorStatus 0x200: 00 ")  # page 0 carries State
    assert table["hours"][1].startswith("MotorStatus 0x200: 01 ")  # page 1 the counters
    assert "MotorData (standard id 0x100, 8 bytes, stale after 300 ms): speed" in out
    assert sent_by_gateway == 0  # the gateway only listens
