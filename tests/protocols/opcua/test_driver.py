"""The OPC UA driver against the simulator's real asyncua server on loopback.

One server serves the whole module (asyncua takes about a second to start); tests that change
values use their own `Bench.<i>` points so that they do not see each other's changes. Every test
is checked, server side, to have sent no Write and no Call (issue 3, "All protocols").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import aclosing
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from asyncua import Client

from gateway.core.clock import ManualClock
from gateway.core.errors import BadResponse, DeviceUnreachable
from gateway.core.records import Quality, Sample, Waveform
from simulator.opcua_server import OpcUaMachineServer
from tests.support.opcua import ThreadedServer, make_driver, next_matching, node

USERS = {"operator": "s3cret"}


@pytest.fixture(scope="module")
def plant() -> Iterator[ThreadedServer]:
    server = ThreadedServer(machine="Pump", users=USERS, bench_nodes=8).start()
    yield server
    server.stop()


@pytest.fixture
def sim(plant: ThreadedServer) -> OpcUaMachineServer:
    return plant.sim


@pytest.fixture
def writes_expected() -> None:
    """Requested by the one test that writes on purpose (the recorder's positive control)."""


@pytest.fixture(autouse=True)
def _read_only(plant: ThreadedServer, request: pytest.FixtureRequest) -> Iterator[None]:
    before = dict(plant.sim.mutating_requests())
    yield
    if "writes_expected" not in request.fixturenames:
        assert plant.sim.mutating_requests() == before, "the driver sent a write or call"


async def test_subscription_delivers_value_changes_with_source_timestamps(
    plant: ThreadedServer, sim: OpcUaMachineServer
) -> None:
    clock = ManualClock(start=1_800_000_000.0)
    driver = make_driver(
        sim.endpoint, [node(name="level", node_id=sim.node_id("Bench.0"))], clock=clock
    )
    async with driver, aclosing(driver.records()) as stream:
        first = await next_matching(stream, lambda r: True)
        assert first.tag == "pump.level" and first.quality is Quality.GOOD
        await plant.call(sim.set_value("Bench.0", 12.5, source_ts=1_700_000_123.25))
        changed = await next_matching(stream, lambda r: r.value == 12.5)
        await plant.call(sim.set_value("Bench.0", 13.0, source_ts=1_700_000_124.5))
        again = await next_matching(stream, lambda r: r.value == 13.0)
    assert changed.source_ts == pytest.approx(1_700_000_123.25, abs=1e-6)
    assert again.source_ts == pytest.approx(1_700_000_124.5, abs=1e-6)
    assert changed.ts == clock.now()  # the gateway's clock, not the server's
    assert driver.statistics().data_changes >= 3


async def test_poll_mode_reads_at_the_poll_period_without_a_subscription(
    plant: ThreadedServer, sim: OpcUaMachineServer
) -> None:
    subscriptions_before = sim.requests["create_subscription"]
    driver = make_driver(
        sim.endpoint,
        [node(name="flow", node_id=sim.node_id("Bench.1"), mode="poll")],
        poll_period_s=0.05,
    )
    async with driver, aclosing(driver.records()) as stream:
        await plant.call(sim.set_value("Bench.1", 3.0))
        await next_matching(stream, lambda r: r.value == 3.0)
        await plant.call(sim.set_value("Bench.1", 4.0))
        polled = await next_matching(stream, lambda r: r.value == 4.0)
    assert polled.quality is Quality.GOOD and polled.source_ts is not None
    assert driver.statistics().reads >= 2
    assert sim.requests["create_subscription"] == subscriptions_before


async def test_read_returns_one_record_per_node_in_engineering_units(
    sim: OpcUaMachineServer,
) -> None:
    nodes = [
        node(name="temp", node_id=sim.node_id("Temperature"), scale=2.0, offset=1.0, unit="degC"),
        node(name="state", node_id=sim.node_id("RunState"), mode="poll"),
        node(name="vib", node_id=sim.node_id("Vibration"), kind="waveform", sample_rate=25_600),
    ]
    async with make_driver(sim.endpoint, nodes) as driver:
        temp, state, vib = await driver.read()
    assert isinstance(temp, Sample) and temp.value == 41.5 * 2.0 + 1.0
    assert isinstance(state, Sample) and state.value == 1.0
    assert isinstance(vib, Waveform) and vib.sample_rate == 25_600 and vib.data.shape == (4096,)


async def test_array_node_becomes_a_waveform_with_the_rate_from_its_node(
    plant: ThreadedServer, sim: OpcUaMachineServer
) -> None:
    block = np.sin(np.linspace(0, 20 * np.pi, 4096))
    await plant.call(sim.set_value("Vibration", block.tolist()))
    vib = node(
        name="vib",
        node_id=sim.node_id("Vibration"),
        kind="waveform",
        unit="g",
        sample_rate_node=sim.node_id("VibrationSampleRate"),
    )
    try:
        async with make_driver(sim.endpoint, [vib]) as driver:
            (read,) = await driver.read()
            async with aclosing(driver.records()) as stream:
                await next_matching(stream, lambda r: isinstance(r, Waveform))
                # The rate node is monitored too: a new rate applies to the blocks after it.
                # Its notification may share a publish with the next block, so publish new
                # blocks until one carries the new rate.
                await plant.call(sim.set_value("VibrationSampleRate", 25_600.0))
                for k in range(2, 12):
                    expected = block * k
                    await plant.call(sim.set_value("Vibration", expected.tolist()))
                    streamed = await next_matching(stream, partial(_has_data, expected))
                    if streamed.sample_rate == 25_600.0:
                        break
    finally:
        await plant.call(sim.set_value("VibrationSampleRate", 12_800.0))
    assert isinstance(read, Waveform)
    np.testing.assert_allclose(read.data, block)
    assert (read.sample_rate, read.unit, read.quality) == (12_800.0, "g", Quality.GOOD)
    assert streamed.sample_rate == 25_600.0


def _has_data(expected: np.ndarray, record: object) -> bool:
    return isinstance(record, Waveform) and np.array_equal(record.data, expected)


async def test_bad_status_becomes_a_bad_sample_named_after_it(
    plant: ThreadedServer, sim: OpcUaMachineServer
) -> None:
    await plant.call(sim.set_value("Bench.2", 5.0))
    driver = make_driver(sim.endpoint, [node(name="p", node_id=sim.node_id("Bench.2"))])
    async with driver, aclosing(driver.records()) as stream:
        await next_matching(stream, lambda r: r.value == 5.0)
        await plant.call(sim.set_status("Bench.2", "BadSensorFailure"))
        streamed = await next_matching(stream, lambda r: r.quality is Quality.BAD)
        (read,) = await driver.read()
        await plant.call(sim.set_value("Bench.2", 6.0))
        recovered = await next_matching(stream, lambda r: r.quality is Quality.GOOD)
    for bad in (streamed, read):
        assert isinstance(bad, Sample)
        assert (bad.value, bad.quality, bad.reason) == (None, Quality.BAD, "BadSensorFailure")
    assert recovered.value == 6.0
    assert driver.statistics().bad_samples >= 2


async def test_uncertain_status_keeps_the_value_and_marks_it(
    plant: ThreadedServer, sim: OpcUaMachineServer
) -> None:
    await plant.call(sim.set_value("Bench.3", 8.5, status="UncertainLastUsableValue"))
    async with make_driver(
        sim.endpoint, [node(name="u", node_id=sim.node_id("Bench.3"))]
    ) as driver:
        (sample,) = await driver.read()
    assert isinstance(sample, Sample)
    assert (sample.value, sample.quality) == (8.5, Quality.UNCERTAIN)


async def test_unknown_node_is_a_bad_sample_while_the_others_keep_flowing(
    sim: OpcUaMachineServer,
) -> None:
    nodes = [
        node(name="ghost", node_id="ns=2;s=Pump.DoesNotExist"),
        node(name="temp", node_id=sim.node_id("Temperature")),
    ]
    async with make_driver(sim.endpoint, nodes) as driver:
        async with aclosing(driver.records()) as stream:
            ghost = await next_matching(stream, lambda r: r.tag == "pump.ghost")
            temp = await next_matching(stream, lambda r: r.tag == "pump.temp")
        read_ghost, _ = await driver.read()
    assert (ghost.quality, ghost.reason) == (Quality.BAD, "not monitored: BadNodeIdUnknown")
    assert isinstance(read_ghost, Sample)
    assert (read_ghost.quality, read_ghost.reason) == (Quality.BAD, "BadNodeIdUnknown")
    assert temp.quality is Quality.GOOD


async def test_absolute_deadband_suppresses_small_changes_at_the_server(
    plant: ThreadedServer, sim: OpcUaMachineServer
) -> None:
    await plant.call(sim.set_value("Bench.4", 100.0))
    speed = node(
        name="s", node_id=sim.node_id("Bench.4"), deadband={"type": "absolute", "value": 5}
    )
    driver = make_driver(sim.endpoint, [speed])
    async with driver, aclosing(driver.records()) as stream:
        await next_matching(stream, lambda r: r.value == 100.0)
        await plant.call(sim.set_value("Bench.4", 102.0))  # inside the deadband
        await plant.call(sim.set_value("Bench.4", 110.0))
        following = await next_matching(stream, lambda r: True)
    assert following.value == 110.0


async def test_username_login_reads_the_password_from_its_file(
    tmp_path: Path, sim: OpcUaMachineServer
) -> None:
    good, wrong = tmp_path / "good", tmp_path / "wrong"
    good.write_text("s3cret\n")
    wrong.write_text("guess\n")
    temp = [node(name="temp", node_id=sim.node_id("Temperature"))]

    def login(path: Path) -> dict[str, object]:
        return {"method": "username", "username": "operator", "password_file": str(path)}

    async with make_driver(sim.endpoint, temp, login=login(good)) as driver:
        (sample,) = await driver.read()
    assert sample.quality is Quality.GOOD
    with pytest.raises(BadResponse, match=r"BadUserAccessDenied|BadIdentityTokenRejected"):
        async with make_driver(sim.endpoint, temp, login=login(wrong)):
            pass


async def test_connection_refused_is_device_unreachable() -> None:
    driver = make_driver("opc.tcp://127.0.0.1:9/nothing", [node(name="t", node_id="ns=2;s=T")])
    with pytest.raises(DeviceUnreachable, match="refused"):
        async with driver:
            pass


async def test_exit_twice_and_exit_without_enter_are_quiet(sim: OpcUaMachineServer) -> None:
    driver = make_driver(sim.endpoint, [node(name="temp", node_id=sim.node_id("Temperature"))])
    await driver.__aexit__(None, None, None)
    async with driver:
        await driver.read()
    await driver.__aexit__(None, None, None)
    # And it can be entered again, as a source task does after a failure.
    async with driver:
        (sample,) = await driver.read()
    assert sample.quality is Quality.GOOD and driver.statistics().connects == 2


async def test_no_task_is_left_behind_after_a_streaming_session(sim: OpcUaMachineServer) -> None:
    before = asyncio.all_tasks()
    nodes = [
        node(name="temp", node_id=sim.node_id("Temperature")),
        node(name="state", node_id=sim.node_id("RunState"), mode="poll"),
    ]
    driver = make_driver(sim.endpoint, nodes)
    async with driver, aclosing(driver.records()) as stream:
        await next_matching(stream, lambda r: r.tag == "pump.state")
        assert len(asyncio.all_tasks()) > len(before)  # asyncua's tasks are running
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() if not t.done()} == before


async def test_write_recorder_sees_a_write_when_one_is_made(
    sim: OpcUaMachineServer, writes_expected: None
) -> None:
    """Positive control: the read-only check above each test can fail."""
    writes = sim.requests["write"]
    client = Client(sim.endpoint)
    async with client:
        await client.get_node(sim.node_id("Setpoint")).write_value(41.0)
    assert sim.requests["write"] == writes + 1


async def test_a_streaming_session_used_only_read_and_subscription_services(
    sim: OpcUaMachineServer,
) -> None:
    before = dict(sim.requests)
    nodes = [node(name="temp", node_id=sim.node_id("Temperature"))]
    async with make_driver(sim.endpoint, nodes) as driver, aclosing(driver.records()) as stream:
        await next_matching(stream, lambda r: True)
        await driver.read()
    used = {name for name, n in sim.requests.items() if n != before.get(name, 0)}
    allowed = {"create_session", "read", "create_subscription", "create_monitored_items"}
    assert used <= allowed | {"delete_subscriptions"}
    assert {"read", "create_monitored_items"} <= used
