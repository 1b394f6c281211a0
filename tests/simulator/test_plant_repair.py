"""The plant reacts to a repair (issue 13): the `repaired` transition of one of its asset's
tickets, as the gateway publishes it on a real mosquitto, replaces the pump's bearing. The
bearing temperature served over Modbus TCP (read with the gateway's own driver) is back to
normal, and the vibration served over OPC UA (read with the gateway's OPC UA driver) no longer
shows the outer-race defect to the gateway's vibration detector. Other assets' repairs, other
transitions of the pump's tickets and resends of the same message are not repairs of the
pump."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sys
from collections.abc import Callable
from contextlib import aclosing

import pytest
import yaml

from detectors.vibration.catalogue import BearingCatalogue
from detectors.vibration.detector import VibrationDetector
from gateway.cli.demo import wait_for_port
from gateway.core.interfaces import TicketEvent
from gateway.core.records import FaultCode, Finding, Priority, Sample, Ticket, TicketState, Waveform
from simulator.modbus_server import ModbusSimServer
from simulator.plant import PUMP_ASSET
from simulator.pump import PUMP_POINTS, PumpScript, run_pump_plant
from simulator.repairs import Repair, RepairFeed, watch_repairs
from tests.support import opcua
from tests.support.broker import MosquittoBroker, free_loopback_port
from tests.support.modbus import make_driver, wait_until
from tests.support.site import REPO
from uplink.events import build_ticket_event, encode_json, source_urn, topic_for_kind
from uplink.mqtt import LinkSettings, MqttLink, OutgoingMessage
from uplink.topics import Topics

pytestmark = pytest.mark.broker

TOPICS = Topics("factory", "plant-a", "edge-01")
# Hot from the start: past the hi limit (80) within a second, at its 88 degC plateau after 1.3 s.
OVERHEATED = PumpScript(normal_s=0.0, heat_rate_degc_per_s=25.0, noise=False)
NORMAL_DEGC = OVERHEATED.normal_bearing_degc  # 55: what a healthy bearing runs at
_sequence = itertools.count(1)


def ticket(asset: str, state: TicketState, ticket_id: str) -> Ticket:
    return Ticket(
        id=ticket_id,
        key=f"plant-a/{asset}/threshold.high/threshold:bearing_overtemp",
        site="plant-a",
        asset=asset,
        fault_code="threshold.high",
        detector="threshold:bearing_overtemp",
        priority=Priority.P2,
        state=state,
        revision=7,
        opened_at=1.0,
        first_seen=1.0,
        last_seen=2.0,
        occurrences=1,
        peak_value=88.0,
        message="bearing_temp above its high limit",
    )


def transition(asset: str, kind: str, ticket_id: str, event_id: str) -> OutgoingMessage:
    """The ticket message the gateway publishes for this transition (its own encoder)."""
    state = TicketState(kind.upper())
    event = TicketEvent(ticket_id, 7, kind, 2.0, {"from": "IN_PROGRESS", "to": state.value})
    document = build_ticket_event(
        ticket(asset, state, ticket_id),
        event,
        event_id=event_id,
        source=source_urn("plant-a", "edge-01"),
        sequence=next(_sequence),
        gateway="edge-01",
    )
    return OutgoingMessage(topic_for_kind(TOPICS, kind), encode_json(document), qos=1)


async def bearing_temp(driver) -> float:
    samples = {s.tag: s for s in await driver.read() if isinstance(s, Sample)}
    value = samples[f"{PUMP_ASSET}.bearing_temp"].value
    assert value is not None
    return float(value)


async def readings_until(pump, done: Callable[[float], bool], *, within_s: float) -> list[float]:
    """The bearing temperatures read every 50 ms up to the first that is `done`."""
    readings: list[float] = []
    async with asyncio.timeout(within_s):
        while True:
            readings.append(await bearing_temp(pump))
            if done(readings[-1]):
                return readings
            await asyncio.sleep(0.05)


async def test_a_reported_repair_of_the_pump_brings_its_bearing_back_to_normal(
    mosquitto: MosquittoBroker,
):
    repaired = asyncio.Event()
    repairs: list[Repair] = []

    def on_repair(repair: Repair) -> None:
        repairs.append(repair)
        repaired.set()

    ready: asyncio.Future[ModbusSimServer] = asyncio.get_running_loop().create_future()
    subscribed = asyncio.Event()
    stop = asyncio.Event()
    feed = RepairFeed(mosquitto.host, mosquitto.port, TOPICS)
    tasks = [
        asyncio.create_task(
            run_pump_plant(
                "127.0.0.1",
                0,
                script=OVERHEATED,
                stop_event=stop,
                update_period_s=0.02,
                on_ready=ready.set_result,
                repaired=repaired,
            ),
            name="pump-plant",
        ),
        asyncio.create_task(
            watch_repairs(feed, frozenset({PUMP_ASSET}), on_repair, subscribed=subscribed),
            name="plant-repairs",
        ),
    ]
    publisher = MqttLink(LinkSettings(mosquitto.host, mosquitto.port, "test-gateway"))
    try:
        server = await asyncio.wait_for(ready, 5.0)
        await asyncio.wait_for(subscribed.wait(), 10.0)
        async with publisher, make_driver(server.port, PUMP_POINTS, device_id=PUMP_ASSET) as pump:
            await publisher.wait_connected()
            temps = await readings_until(pump, lambda t: t > 85.0, within_s=5.0)
            # Not repairs of the pump: another asset's repair, the pump's work starting.
            await publisher.publish(transition("pump-2", "repaired", "T-2", "ev-other-asset"))
            await publisher.publish(transition(PUMP_ASSET, "in_progress", "T-1", "ev-started"))
            # The pump's repair, and the gateway's resend of the same message (same id).
            for _ in range(2):
                await publisher.publish(transition(PUMP_ASSET, "repaired", "T-1", "ev-repaired"))
            await asyncio.wait_for(repaired.wait(), 5.0)
            await readings_until(pump, lambda t: abs(t - NORMAL_DEGC) < 0.01, within_s=3.0)
            # Replaced, not merely cooling for a while: it stays at its normal temperature.
            for _ in range(10):
                await asyncio.sleep(0.05)
                assert await bearing_temp(pump) == pytest.approx(NORMAL_DEGC, abs=0.01)
            # A later repair of another ticket of the pump is one more: once it is in, every
            # message before it was read, and the resend was not counted twice.
            await publisher.publish(transition(PUMP_ASSET, "repaired", "T-3", "ev-second"))
            await wait_until(lambda: len(repairs) == 2)
    finally:
        stop.set()
        for task in tasks[1:]:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5.0)
    assert repairs == [
        Repair("T-1", PUMP_ASSET, "threshold.high"),
        Repair("T-3", PUMP_ASSET, "threshold.high"),
    ]
    assert max(temps) > 85.0  # it was overheated before the repair


def test_a_repair_ends_the_overheat_for_good_on_the_script():
    """The pure script: hot before the repair, normal from the repair on, never hot again."""
    repaired = PumpScript(normal_s=0.0, heat_rate_degc_per_s=25.0, repaired_at_s=10.0)
    assert repaired.bearing_temp(9.9) == 88.0
    assert all(repaired.bearing_temp(t) == 55.0 for t in (10.0, 10.1, 60.0, 3600.0))
    # Repaired before the heat would have passed the limit: it never does.
    assert PumpScript(repaired_at_s=10.0).crossing_time(80.0) is None


def test_the_plant_repairs_the_asset_the_demo_site_names():
    """Both pump devices of the demo site (Modbus and OPC UA) are the asset the plant repairs."""
    for device in ("pump-1.yaml", "pump-1-vibration.yaml"):
        config = yaml.safe_load((REPO / "configs" / "devices" / device).read_text())
        assert config["asset"]["id"] == PUMP_ASSET, device


async def test_the_plant_process_replaces_the_bearing_when_told_over_the_broker(
    mosquitto: MosquittoBroker,
):
    """The plant as the demo starts it (`python -m simulator plant --repairs-port ...`): the
    defect and the overheat 2 s in; after the repaired transition, the vibration detector that
    had confirmed the outer-race defect clears it, and the bearing is at 55 degC."""
    modbus_port, opcua_port = free_loopback_port(), free_loopback_port()
    plant = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "plant", "--modbus-port", str(modbus_port),
        "--opcua-port", str(opcua_port), "--bearing-fault-after", "2",
        "--repairs-port", str(mosquitto.port), "--prefix", TOPICS.prefix,
        "--site", TOPICS.site, "--gateway", TOPICS.gateway,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/edge-gateway/pump"
    vib = opcua.node(
        name="vib_de",
        node_id="ns=2;s=Pump.Vibration",
        kind="waveform",
        unit="g",
        sample_rate_node="ns=2;s=Pump.VibrationSampleRate",
    )
    detector = VibrationDetector(
        asset=PUMP_ASSET,
        tag_id=f"{PUMP_ASSET}.vib_de",
        geometry=BearingCatalogue.load().get("SKF-6205"),
        fixed_rpm=2950,
        confirm_blocks=3,
    )
    outer_race = str(FaultCode.BEARING_OUTER_RACE)

    async def next_finding(stream, active: bool, within_s: float) -> Finding:
        async with asyncio.timeout(within_s):
            async for record in stream:
                if isinstance(record, Waveform):
                    for finding in detector.update(record):
                        if finding.fault_code == outer_race and finding.active is active:
                            return finding
        raise AssertionError("the vibration stream ended")

    publisher = MqttLink(LinkSettings(mosquitto.host, mosquitto.port, "test-gateway"))
    try:
        assert await wait_for_port(modbus_port, 30.0), "the plant's Modbus server"
        assert await wait_for_port(opcua_port, 30.0), "the plant's OPC UA server"
        async with (
            publisher,
            make_driver(modbus_port, PUMP_POINTS, device_id=PUMP_ASSET) as pump,
            opcua.make_driver(endpoint, [vib], device_id=PUMP_ASSET) as accelerometer,
            aclosing(accelerometer.records()) as blocks,
        ):
            await publisher.wait_connected()
            await next_finding(blocks, active=True, within_s=30.0)
            await readings_until(pump, lambda t: t > 85.0, within_s=10.0)
            # Seconds after its start, the plant's subscription on the local broker is in
            # place: the broker hands it every transition from now on.
            await publisher.publish(transition(PUMP_ASSET, "repaired", "T-1", "ev-repaired"))
            await readings_until(pump, lambda t: abs(t - NORMAL_DEGC) < 1.5, within_s=5.0)
            cleared = await next_finding(blocks, active=False, within_s=30.0)
    finally:
        plant.send_signal(signal.SIGINT)
        raw, _ = await asyncio.wait_for(plant.communicate(), 30)
    output = raw.decode()
    assert cleared.fault_code == outer_race
    assert "bearing replaced" in output, output[-2000:]
    assert plant.returncode == 0, output[-2000:]
