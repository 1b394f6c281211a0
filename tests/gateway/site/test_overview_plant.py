"""The overview and the device page of the real daemon, on a plant of real servers (issue 16,
items 1 and 2; docs/SITE_PAGE.md, The pages).

`Gateway.run` on a gateway.yaml of five devices, each in a state the overview must show:
- `press` on a pymodbus TCP server: polling, with its last poll latency;
- `mixer` on a second pymodbus TCP server that answers, then is stopped: unreachable, with the
  time of its last GOOD sample;
- `fan-1` and `fan-9`, two units of one Modbus RTU line (socat pseudo-terminals, the pymodbus
  serial server answering unit 1 only): `fan-9` never answers and is degraded;
- `oven` on the asyncua simulator, whose Temperature carries a source timestamp the server set,
  90 s before the test started: the device page shows it as the point's source time.
The uplink is a real mosquitto broker with no central system behind it, so the ticket the
mixer's outage opens stays unsettled in the outbox; the overview shows its age as the oldest,
beside the residency counters (bytes acquired from devices vs bytes sent off-site, per message
type).

Figures shown on the page are checked against what the test knows from outside (when the
mixer's server stopped, the timestamp the OPC UA server set) or
against the daemon's own health report read around the page (counters only grow)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Gateway
from gateway.config.loader import load_config
from gateway.core.clock import SystemClock
from protocols.modbus.config import RegisterTable
from simulator.modbus_server import ModbusSimServer, RegisterMap
from tests.support.broker import MosquittoBroker, free_loopback_port
from tests.support.modbus import pty_pair, wait_until
from tests.support.opcua import ThreadedServer

pytestmark = [pytest.mark.broker, pytest.mark.slow]

POLL_S = 0.2
TIMEOUT_S = 0.15
OVEN_SOURCE_TS = float(int(time.time()) - 90)  # whole seconds: the page shows seconds
UNITS = {"kB": 1e3, "MB": 1e6, "GB": 1e9, "B": 1.0}


def modbus_device(device_id: str, connection: str) -> str:
    return (
        f"id: {device_id}\nasset: {{class: press, area: hall-1}}\n"
        f"connection:\n{connection}"
        f"poll_period_s: {POLL_S}\n"
        "points:\n  - {name: speed, address: 0, type: uint16, unit: rpm}\n"
    )


def tcp(port: int) -> str:
    return f"  protocol: modbus_tcp\n  host: 127.0.0.1\n  port: {port}\n  timeout_s: {TIMEOUT_S}\n"


def rtu(tty: str, unit: int) -> str:
    # ptys refuse parity settings (termios EINVAL): 8N1.
    return (
        f"  protocol: modbus_rtu\n  port: {tty}\n  unit_id: {unit}\n  baudrate: 115200\n"
        f"  parity: N\n  timeout_s: {TIMEOUT_S}\n  inter_request_pause_ms: 2\n"
    )


def write_site(directory: Path, *, broker: int, page: int, health: int, press: int, mixer: int,
               tty: str, opcua: str) -> Path:  # fmt: skip
    devices = directory / "devices"
    devices.mkdir()
    (devices / "press.yaml").write_text(modbus_device("press", tcp(press)))
    (devices / "mixer.yaml").write_text(modbus_device("mixer", tcp(mixer)))
    (devices / "fan-1.yaml").write_text(modbus_device("fan-1", rtu(tty, 1)))
    (devices / "fan-9.yaml").write_text(modbus_device("fan-9", rtu(tty, 9)))
    (devices / "oven.yaml").write_text(
        "id: oven\nasset: {class: oven, area: hall-1}\n"
        f"connection:\n  protocol: opcua\n  endpoint: {opcua}\n  timeout_s: 2.0\n"
        "poll_period_s: 5.0\n"
        "nodes:\n  - {name: temperature, node_id: ns=2;s=Oven.Temperature, unit: degC}\n"
    )
    gateway = directory / "gateway.yaml"
    gateway.write_text(
        "site: plant-a\ngateway_id: edge-01\ndevices:\n  - devices/*.yaml\n"
        f"storage:\n  directory: {directory / 'var'}\n"
        f"uplink:\n  host: 127.0.0.1\n  port: {broker}\n  health_period_s: 0.5\n"
        f"health:\n  port: {health}\n"
        f"site_page:\n  port: {page}\n  update_s: 0.5\n"
    )
    return gateway


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=20) as reply:
        return dict(json.loads(reply.read()))


async def read_status(port: int) -> dict:
    """The daemon's health report (`/status`), read off the loop the daemon serves it on."""
    return await asyncio.to_thread(status, port)


async def report_until(port: int, condition: Callable[[dict], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition(report := await read_status(port)):
        assert time.monotonic() < deadline, f"not reached within {within_s} s: {report}"
        await asyncio.sleep(0.1)


def devices_of(report: dict) -> dict[str, dict]:
    return {d["device"]: d for d in report["devices"]}


def to_bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def local_time(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def seconds(text: str) -> float:
    """A duration as the page writes it: `42 s`, `3 min 05 s`."""
    found = re.fullmatch(r"(?:(\d+) min )?(\d+) s", text)
    assert found is not None, text
    return int(found.group(1) or 0) * 60 + int(found.group(2))


def row(html: str, device: str) -> str:
    found = re.search(rf'<tr data-device="{device}" data-state="[^"]*">(.*?)</tr>', html, re.S)
    assert found is not None, f"no row of `{device}` on the overview"
    return found.group(1)


def cells(row_html: str) -> list[str]:
    """The text of each cell of a table row, tags removed."""
    return [" ".join(re.sub(r"<[^>]+>", " ", cell).split())
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row_html, re.S)]  # fmt: skip


@dataclass
class Plant:
    page: str  # the site page's address
    health_port: int
    mixer_stopped_at: float
    mixer_first_answer_at: float


def speed_map(rpm: int) -> RegisterMap:
    registers = RegisterMap(holding=16, input=16)
    registers.write(RegisterTable.HOLDING, 0, [rpm])
    return registers


@pytest.fixture
async def plant(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Plant]:
    opcua = ThreadedServer(machine="Oven").start()
    try:
        await opcua.call(opcua.sim.set_value("Temperature", 182.5, source_ts=OVEN_SOURCE_TS))
        async with (
            pty_pair(tmp_path) as (gateway_tty, device_tty),
            ModbusSimServer(speed_map(1450)) as press,
            ModbusSimServer(speed_map(720)) as mixer,
            ModbusSimServer(units={1: speed_map(2950)}, serial_port=device_tty),
        ):
            page_port, health_port = free_loopback_port(), free_loopback_port()
            loaded = load_config(write_site(
                tmp_path, broker=mosquitto.port, page=page_port, health=health_port,
                press=press.port, mixer=mixer.port, tty=gateway_tty, opcua=opcua.sim.endpoint,
            ))  # fmt: skip
            stop = asyncio.Event()
            ready = asyncio.Event()
            daemon = asyncio.create_task(
                Gateway(loaded, SystemClock()).run(stop, on_ready=lambda _: ready.set()),
                name="gateway",
            )
            try:
                await asyncio.wait_for(ready.wait(), 60)
                await wait_until(lambda: len(mixer.requests) > 0, within_s=10)
                first_answer = time.time()
                # Some GOOD samples of the mixer in telemetry.db, then it goes away.
                await wait_until(lambda: len(mixer.requests) >= 5, within_s=10)
                await mixer.stop()
                stopped_at = time.time()

                def settled(report: dict) -> bool:
                    states = {d: s["state"] for d, s in devices_of(report).items()}
                    return (
                        states.get("mixer") == "unreachable"
                        and states.get("fan-9") == "degraded"
                        and states.get("press") == "polling"
                        and report["residency"]["sent_bytes"].get("health", 0) > 0
                        # The mixer's comm.lost ticket, unsettled: no central system acks it.
                        and report["outbox"]["by_kind"].get("ticket", 0) > 0
                    )

                await report_until(health_port, settled, within_s=30)
                yield Plant(f"http://127.0.0.1:{page_port}/", health_port, stopped_at,
                            first_answer)  # fmt: skip
            finally:
                stop.set()
                await asyncio.wait_for(daemon, 30)
    finally:
        opcua.stop()


async def test_the_overview_shows_states_latency_residency_and_the_outbox_of_the_running_plant(
    plant: Plant, http: aiohttp.ClientSession
) -> None:
    before = await read_status(plant.health_port)
    async with http.get(plant.page) as reply:
        assert reply.status == 200
        html = await reply.text()
    fetched_at = time.time()
    after = await read_status(plant.health_port)

    # Each device with its state: polling, unreachable, degraded.
    states = dict(re.findall(r'<tr data-device="([^"]+)" data-state="([^"]+)">', html))
    assert states["press"] == "polling" and states["fan-1"] == "polling"
    assert states["mixer"] == "unreachable"
    assert states["fan-9"] == "degraded"
    assert "degraded" in cells(row(html, "fan-9"))[3]

    # Last poll latency of a polling device, in ms: a real round trip within the timeout.
    latency = cells(row(html, "press"))[4]
    found = re.fullmatch(r"(\d+\.\d) ms", latency)
    assert found is not None, latency
    assert 0.0 < float(found.group(1)) <= TIMEOUT_S * 1000

    # Unreachable since the time of its last GOOD sample: after its server first answered,
    # not after it was stopped (the page shows local time to the second).
    state_cell = cells(row(html, "mixer"))[3]
    found = re.search(r"no good data since (\S+ \S+) \((.+)\)", state_cell)
    assert found is not None, state_cell
    last_good = local_time(found.group(1))
    assert plant.mixer_first_answer_at - 1 <= last_good <= plant.mixer_stopped_at + 1
    assert abs(seconds(found.group(2)) - (fetched_at - last_good)) <= 2

    # Outbox: its depth and the age of its oldest unsettled message, the mixer's comm.lost
    # ticket (no central system acknowledges it here), opened after its server stopped.
    found = re.search(r'outbox <b id="outbox-depth">(\d+)</b> unsettled, oldest ([^<]+)</p>', html)
    assert found is not None, "no outbox depth and oldest age on the overview"
    assert int(found.group(1)) >= 1
    oldest = seconds(found.group(2))
    assert 0 <= oldest <= fetched_at - plant.mixer_stopped_at + 1
    assert before["outbox"]["oldest_age_s"] - 1 <= oldest <= after["outbox"]["oldest_age_s"] + 1

    # Residency: bytes acquired from devices vs bytes sent off-site, and per message type.
    residency = re.search(r'<div class="card" id="residency">(.*?)</div>', html, re.S)
    assert residency is not None, "no residency counters on the overview"
    text = " ".join(re.sub(r"<[^>]+>", " ", residency.group(1)).split())
    found = re.search(r"(\d+(?:\.\d)? [kMG]?B) sent of (\d+(?:\.\d)? [kMG]?B) acquired", text)
    assert found is not None, text
    sent, acquired = to_bytes(found.group(1)), to_bytes(found.group(2))

    def total_sent(report: dict) -> int:
        return sum(report["residency"]["sent_bytes"].values())

    # Rounded to a tenth of the unit shown; the counters only grow between the reads.
    assert total_sent(before) * 0.95 - 1 <= sent <= total_sent(after) * 1.05 + 1
    acquired_range = (before["residency"]["acquired_bytes"], after["residency"]["acquired_bytes"])
    assert acquired_range[0] * 0.95 - 1 <= acquired <= acquired_range[1] * 1.05 + 1
    assert acquired > 0 and sent > 0
    found = re.search(r"health (\d+(?:\.\d)? [kMG]?B)", text)
    assert found is not None, text
    health_sent = to_bytes(found.group(1))
    assert before["residency"]["sent_bytes"]["health"] * 0.95 - 1 <= health_sent
    assert health_sent <= after["residency"]["sent_bytes"]["health"] * 1.05 + 1


async def test_the_device_page_shows_the_source_timestamp_the_server_set(
    plant: Plant, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{plant.page}device/oven") as reply:
        assert reply.status == 200
        html = await reply.text()
    found = re.search(r'<tr data-point="temperature" data-quality="GOOD"[^>]*>(.*?)</tr>', html,
                      re.S)  # fmt: skip
    assert found is not None, "no GOOD temperature row on the oven's page"
    point = cells(found.group(1))
    assert point[1] == "182.5 degC"
    # Columns: point, value, label, quality, reason, source time, received.
    assert local_time(point[5]) == OVEN_SOURCE_TS
    assert local_time(point[6]) > OVEN_SOURCE_TS + 60  # received now, not at the source time
