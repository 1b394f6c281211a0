"""`edge-gateway scan modbus` (issue 15): the block planner as pure tables, then the scan
against the pymodbus simulator: ranges found, paced and bounded, read-only from the server's
side, and the draft passing check-config and probing GOOD."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from protocols.modbus.config import ModbusTcpConnection, RegisterTable
from protocols.modbus.discovery import draft_from_scan, parse_target, point_entries, scan_device
from protocols.modbus.scan import Outcome, Probe, TableScan, float32_hint
from simulator.modbus_server import ModbusSimServer, RegisterMap
from tests.support.modbus import unused_port
from tests.support.site import REPO


def run_against(scan: TableScan, mapped: set[int], values: dict[int, int] | None = None):
    """Drive the planner against a device mapping `mapped` addresses (exception 2 for a read
    touching anything else); the probes it made, in order."""
    probes = []
    while (probe := scan.next_probe()) is not None:
        probes.append(probe)
        addresses = range(probe.address, probe.address + probe.count)
        if all(a in mapped for a in addresses):
            scan.record(probe, Outcome.ANSWERED, [(values or {}).get(a, a) for a in addresses])
        else:
            scan.record(probe, Outcome.REFUSED)
    return probes


def test_contiguous_map_is_found_exactly_and_unmapped_blocks_cost_1_plus_block_over_step():
    scan = TableScan(start=0, count=200, block=16, step=4)
    probes = run_against(scan, set(range(0, 37)))
    assert scan.ranges() == [(0, 36)]
    singles = [p.address for p in probes if p.count == 1]
    # Up from the answering block to the first refusal, then the block's samples left.
    assert singles[:8] == [32, 33, 34, 35, 36, 37, 40, 44]
    blocks = [p for p in probes if p.count > 1]
    assert len(blocks) == 13
    # 11 refused blocks: 10 of 16 addresses (4 samples each) and the last of 8 (2 samples),
    # the first one's samples partly done by the walk.
    assert len(probes) == 13 + 6 + 2 + 9 * 4 + 2


def test_a_range_inside_refused_blocks_is_found_by_sampling_and_walked_to_its_edges() -> None:
    scan = TableScan(start=0, count=64, block=16, step=4)
    run_against(scan, set(range(21, 40)))
    assert scan.ranges() == [(21, 39)]


def test_a_range_shorter_than_the_step_may_be_missed_step_1_finds_it() -> None:
    mapped = {5, 100}
    coarse = TableScan(start=0, count=128, block=16, step=4)
    run_against(coarse, mapped)
    assert coarse.ranges() == [(100, 100)]  # 5 is neither in a block that answers nor sampled
    fine = TableScan(start=0, count=128, block=16, step=1)
    run_against(fine, mapped)
    assert fine.ranges() == [(5, 5), (100, 100)]


def test_with_no_sampling_only_edges_next_to_answering_blocks_are_probed() -> None:
    scan = TableScan(start=0, count=64, block=16, step=0)
    probes = run_against(scan, set(range(0, 20)))
    assert scan.ranges() == [(0, 19)]
    assert len(probes) == 4 + 5  # four blocks; 16..20 one by one


def test_the_last_block_is_cut_at_the_end_of_the_range() -> None:
    scan = TableScan(start=90, count=20, block=16)
    probes = run_against(scan, set(range(0, 1000)))
    assert probes == [Probe(90, 16), Probe(106, 4)] and scan.ranges() == [(90, 109)]


def test_an_unsupported_table_and_a_silent_device_stop_the_table() -> None:
    scan = TableScan(start=0, count=100, block=10)
    probe = scan.next_probe()
    assert probe is not None
    scan.record(probe, Outcome.UNSUPPORTED)
    assert scan.next_probe() is None and "does not serve" in (scan.stopped or "")
    quiet = TableScan(start=0, count=100, block=10)
    for _ in range(3):
        probe = quiet.next_probe()
        assert probe is not None
        quiet.record(probe, Outcome.SILENT)
    assert quiet.next_probe() is None and quiet.stopped == "no answer to 3 requests in a row"


@pytest.mark.parametrize(
    ("start", "count", "block"), [(-1, 10, 1), (0, 0, 1), (0, 10, 0), (65530, 10, 1)]
)
def test_a_range_that_makes_no_sense_is_refused(start: int, count: int, block: int) -> None:
    with pytest.raises(ValueError):
        TableScan(start=start, count=count, block=block)


def test_float32_hints_only_for_plausible_measurements() -> None:
    assert float32_hint(0x425C, 0x1520) == pytest.approx(55.0206, abs=1e-4)
    assert float32_hint(0, 0) is None
    assert float32_hint(0x1520, 0x4086) is None  # 3e-26: two unrelated registers
    assert float32_hint(0x7FC0, 0x0000) is None  # NaN


@pytest.mark.parametrize(
    ("text", "target"),
    [("10.0.0.5", ("10.0.0.5", 502)), ("10.0.0.5:5020", ("10.0.0.5", 5020)),
     ("plc-3.local:502", ("plc-3.local", 502)), ("[fe80::1]:1502", ("fe80::1", 1502)),
     ("[::1]", ("::1", 502))],
)  # fmt: skip
def test_targets(text: str, target: tuple[str, int]) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "a b", "host:port"])
def test_bad_targets(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


def test_point_entries_name_the_table_and_hint_at_pairs() -> None:
    [(first, note), _] = point_entries(RegisterTable.HOLDING, {0: 0x425C, 1: 0x1520})
    assert first == {"name": "hr_0", "table": "holding", "address": 0}
    assert note == "read 0x425C = 16988; with hr_1 as float32 ABCD: 55.0206"
    [(bit, bit_note)] = point_entries(RegisterTable.DISCRETE, {4: 1})
    assert bit == {"name": "di_4", "table": "discrete", "address": 4, "type": "bit"}
    assert bit_note == "read 1"
    [(_, signed)] = point_entries(RegisterTable.INPUT, {7: 0xFFFE})
    assert signed == "read 0xFFFE = 65534 (int16 -2)"


# --- against the simulator ----------------------------------------------------------------


def device_map() -> RegisterMap:
    registers = RegisterMap(holding=40, input=10, coils=16, discrete=16)
    registers.write_value(RegisterTable.HOLDING, 0, 55.25, "float32")  # type: ignore[arg-type]
    registers.write(RegisterTable.HOLDING, 2, [1480])
    registers.write(RegisterTable.INPUT, 0, [1, 2, 3])
    registers.write(RegisterTable.COILS, 3, [1])
    return registers


def connection(port: int) -> ModbusTcpConnection:
    return ModbusTcpConnection.model_validate(
        {"protocol": "modbus_tcp", "host": "127.0.0.1", "port": port, "unit_id": 1,
         "timeout_s": 0.3}
    )  # fmt: skip


async def test_scan_finds_each_table_paced_bounded_and_read_only() -> None:
    waits: list[float] = []
    now = [0.0]

    async def pace(seconds: float) -> None:  # time stands still unless the scan waits
        waits.append(seconds)
        now[0] += seconds

    async with ModbusSimServer(device_map()) as server:
        report = await scan_device(
            connection(server.port),
            list(RegisterTable),
            start=0, count=100, block=16, rate_per_s=50, max_requests=500,
            pace=pace, monotonic=lambda: now[0],
        )  # fmt: skip
        requests = list(server.requests)
    ranges = {table: scan.ranges() for table, scan in report.tables.items()}
    assert ranges == {
        RegisterTable.HOLDING: [(0, 39)],
        RegisterTable.INPUT: [(0, 9)],
        RegisterTable.COILS: [(0, 15)],
        RegisterTable.DISCRETE: [(0, 15)],
    }
    assert report.tables[RegisterTable.HOLDING].found[2] == 1480
    # Paced: one wait of 1/50 s before every request but the first, none longer.
    assert len(requests) == report.requests and waits == [pytest.approx(0.02)] * (
        report.requests - 1
    )
    # Read-only, from the server's side: function codes 1-4 and nothing else.
    assert {r.function_code for r in requests} == {1, 2, 3, 4}


async def test_the_request_budget_bounds_the_scan() -> None:
    async def pace(seconds: float) -> None:
        return None

    async with ModbusSimServer(device_map()) as server:
        report = await scan_device(
            connection(server.port), [RegisterTable.HOLDING, RegisterTable.INPUT],
            start=0, count=1000, block=8, rate_per_s=1000, max_requests=7, pace=pace,
        )  # fmt: skip
        assert len(server.requests) == 7
    assert report.budget_exhausted and report.requests == 7
    assert report.tables[RegisterTable.HOLDING].stopped == "the request budget (7) was used up"
    draft = draft_from_scan(report, device_id="plc", max_points=100, command="scan")
    assert any("request budget" in note for note in draft.notes)


async def test_an_unreachable_device_raises_our_error() -> None:
    from gateway.core.errors import DriverError

    with pytest.raises(DriverError):
        await scan_device(
            connection(await unused_port()), [RegisterTable.HOLDING],
            start=0, count=10, block=10, rate_per_s=10, max_requests=10,
        )  # fmt: skip


async def cli(*args: str, cwd: Path = REPO) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_scan_draft_passes_check_config_and_probes_good(tmp_path: Path) -> None:
    async with ModbusSimServer(device_map()) as server:
        target = f"127.0.0.1:{server.port}"
        draft = tmp_path / "plc.yaml"
        code, out, err = await cli(
            "scan", "modbus", target, "--table", "holding", "--table", "coils", "--count", "64",
            "--rate", "200", "--id", "plc-3", "--output", str(draft),
        )  # fmt: skip
        assert (code, out) == (0, ""), err
        assert f"Next: review {draft}" in err
        text = draft.read_text()
        assert "# holding 0..63: answered 0..39" in text and "# coils 0..63: answered 0..15" in text
        assert "{name: hr_0, table: holding, address: 0}  # read 0x425D = 16989;" in text
        assert "with hr_1 as float32 ABCD: 55.25" in text
        code, out, err = await cli("check-config", str(draft))
        assert code == 0, err
        assert out.startswith("OK: 1 device, 56 tags, 0 rules in")
        scanned = len(server.requests)
        code, out, _ = await cli("probe", str(draft), "--json")
        assert code == 0, out
        report = json.loads(out)
        assert {p["quality"] for p in report["points"]} == {"GOOD"}
        assert {p["name"]: p["value"] for p in report["points"]}["hr_2"] == 1480
        assert {r.function_code for r in server.requests} == {1, 3}
        assert len(server.requests) - scanned == 2  # the probe: one read per table
    # The draft is not written over without --force.
    code, _, err = await cli("scan", "modbus", target, "--output", str(draft))
    assert code == 73 and "exists; give --force" in err


async def test_scan_of_an_unreachable_device_exits_69(tmp_path: Path) -> None:
    code, out, err = await cli("scan", "modbus", f"127.0.0.1:{await unused_port()}")
    assert (code, out) == (69, "")
    assert "the device cannot be reached" in err
