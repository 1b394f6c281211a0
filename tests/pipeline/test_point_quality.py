"""Quality you can see (issue 15): per point, the first BAD or UNCERTAIN reading and the return
to GOOD are logged once each with the reason; BAD and UNCERTAIN readings are counted and the
points BAD now are named; a stream's point that never delivers is reported.

The pure watch first (readings as data, time from their timestamps), then the real thing: a
Modbus device answering exception 2 for one register range and a state outside its
enumeration, through PollingSource, the health report and `edge-gateway status`; and an OPC UA
subscription with a mistyped NodeId through StreamingSource.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random

import pytest

from gateway.cli.status import print_report
from gateway.core.clock import ManualClock, SystemClock
from gateway.core.interfaces import Record
from gateway.core.records import Poll, Quality, Sample, Tag
from gateway.pipeline.quality import PointQuality, quality_statistics
from gateway.pipeline.source import Backoff, PollingSource
from gateway.pipeline.stream import StreamingSource
from gateway.runtime.health import _devices
from gateway.runtime.metrics import render_metrics
from protocols.modbus.config import RegisterTable
from protocols.opcua.config import OpcUaConnection
from protocols.opcua.driver import OpcUaDriver
from simulator.pump import PUMP_POINTS, pump_registers
from tests.gateway.test_health import REPORT
from tests.support.modbus import ModbusSimServer, make_driver, point, wait_until
from tests.support.opcua import ThreadedServer, node

QUALITY_LOGGER = "gateway.pipeline.quality"


def good(tag: str, ts: float, value: float = 1.0) -> Sample:
    return Sample(tag, ts, value)


def bad(tag: str, ts: float, reason: str = "exception 2") -> Sample:
    return Sample.bad(tag, ts, reason)


def uncertain(tag: str, ts: float) -> Sample:
    return Sample(tag, ts, 7.0, Quality.UNCERTAIN, reason="state 7 is not in the enumeration")


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == QUALITY_LOGGER and r.levelno >= level
    ]


# --- the watch, pure ----------------------------------------------------------------------


def test_first_bad_reading_and_return_to_good_are_logged_once_each(caplog) -> None:
    caplog.set_level(logging.INFO, logger=QUALITY_LOGGER)
    watch = PointQuality("pump-1")
    watch.observe([good("pump-1.a", 0), good("pump-1.b", 0)])
    for ts in (1, 2, 3):
        watch.observe([bad("pump-1.a", ts), good("pump-1.b", ts)])
    assert lines(caplog) == ["Point `pump-1.a` BAD: exception 2."]
    assert (watch.bad_samples, watch.points(Quality.BAD)) == (3, ("a",))
    watch.observe([good("pump-1.a", 4), good("pump-1.b", 4)])
    watch.observe([good("pump-1.a", 5), good("pump-1.b", 5)])
    assert lines(caplog) == [
        "Point `pump-1.a` BAD: exception 2.",
        "Point `pump-1.a` GOOD again after 3 BAD readings.",
    ]
    assert watch.points(Quality.BAD) == () and watch.bad_samples == 3


def test_a_whole_good_poll_after_bad_readings_is_the_return_to_good(caplog) -> None:
    # A driver hands a poll whose every point is GOOD as one `Poll` record.
    caplog.set_level(logging.INFO, logger=QUALITY_LOGGER)
    watch = PointQuality("pump-1")
    tags = ("pump-1.a", "pump-1.b")
    watch.observe(Poll(tags, 0, [1.0, 1.0]))
    watch.observe([bad("pump-1.a", 1), uncertain("pump-1.b", 1)])
    poll = Poll(tags, 2, [1.0, 2.0])
    watch.observe(poll)
    watch.observe(Poll(tags, 3, [1.0, 2.0]))
    assert lines(caplog) == [
        "Point `pump-1.a` BAD: exception 2.",
        "Point `pump-1.b` UNCERTAIN: state 7 is not in the enumeration.",
        "Point `pump-1.a` GOOD again after 1 BAD reading.",
        "Point `pump-1.b` GOOD again after 1 UNCERTAIN reading.",
    ]
    assert watch.points(Quality.BAD) == watch.points(Quality.UNCERTAIN) == ()
    assert poll._samples is None  # its samples were not made for the watch


def test_uncertain_is_counted_and_named_apart_and_a_change_to_bad_is_logged(caplog) -> None:
    caplog.set_level(logging.INFO, logger=QUALITY_LOGGER)
    watch = PointQuality("pump-1")
    watch.observe([uncertain("pump-1.state", 1), uncertain("pump-1.state", 2)])
    assert watch.points(Quality.UNCERTAIN) == ("state",) and watch.points(Quality.BAD) == ()
    watch.observe([bad("pump-1.state", 3, "answer too short")])
    watch.observe([good("pump-1.state", 4)])
    assert lines(caplog) == [
        "Point `pump-1.state` UNCERTAIN: state 7 is not in the enumeration.",
        "Point `pump-1.state` BAD (was UNCERTAIN): answer too short.",
        "Point `pump-1.state` GOOD again after 3 BAD or UNCERTAIN readings.",
    ]
    fields = quality_statistics(watch)
    assert (fields["uncertain_values"], watch.bad_samples) == (2, 1)


def test_a_flapping_point_is_muted_to_debug_but_still_counted(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=QUALITY_LOGGER)
    watch = PointQuality("pump-1")
    for ts in range(40):
        watch.observe([bad("pump-1.a", ts) if ts % 2 else good("pump-1.a", ts)])
    loud = lines(caplog)
    assert len(loud) == 6 + 1  # six changes, then one line saying the rest go to DEBUG
    assert "changed quality 6 times within 10 min" in loud[-1]
    assert watch.bad_samples == 20
    # After the window the point is logged normally again.
    watch.observe([good("pump-1.a", 40 + 700)])
    watch.observe([bad("pump-1.a", 41 + 700)])
    assert lines(caplog)[-2:] == [
        "Point `pump-1.a` GOOD again after 1 BAD reading.",
        "Point `pump-1.a` BAD: exception 2.",
    ]


def test_a_stream_point_that_never_delivers_is_named_once(caplog) -> None:
    caplog.set_level(logging.INFO, logger=QUALITY_LOGGER)
    watch = PointQuality("vib")
    watch.expect(["vib.speed", "vib.speeed", "vib.temp"], silence_limit_s=5.0, now_mono=100.0)
    watch.observe_one(good("vib.speed", 1))
    watch.observe_one(bad("vib.temp", 1, "BadNodeIdUnknown"))  # a BAD sample is a delivery
    watch.check_silence(104.9)
    assert watch.silent_points() == ()
    watch.check_silence(105.0)
    watch.check_silence(200.0)
    assert watch.silent_points() == ("speeed",)
    silent = [line for line in lines(caplog, logging.WARNING) if "no sample" in line]
    assert silent == [
        "Point `vib.speeed` has delivered no sample, good or bad, within 5 s of `vib` starting"
        " to stream: check its node id or signal name, and that the device sends it."
    ]
    watch.observe_one(good("vib.speeed", 2))
    assert watch.silent_points() == ()


# --- Modbus through PollingSource, the health report and `status` --------------------------

POINTS = [
    *PUMP_POINTS,
    # Past the end of the simulator's holding table: exception 2 for this request only.
    point(name="flow", table="holding", address=3000, unit="m3/h"),
    point(name="mode", table="input", address=5, enum={0: "stopped", 2: "auto"}),
]


@contextlib.asynccontextmanager
async def polling(source: PollingSource):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_modbus_bad_and_uncertain_points_show_in_statistics_logs_and_status(caplog):
    caplog.set_level(logging.INFO, logger=QUALITY_LOGGER)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10_000)
    registers = pump_registers()
    registers.write(RegisterTable.INPUT, 5, [1])  # a mode nobody put in the enumeration
    async with ModbusSimServer(registers) as server:
        source = PollingSource(
            "pump-1",
            lambda: make_driver(server.port, POINTS, device_id="pump-1", timeout_s=0.3),
            queue,
            ManualClock(),
            period_s=0.05,
            timeout_s=0.5,
            backoff=Backoff(initial_s=0.05, max_s=0.2),
            rng=random.Random(1),
        )
        async with polling(source):
            await wait_until(lambda: source.statistics()[0].reads >= 4)
        stats = source.statistics()[0]
    assert stats.errors == 0  # the device answers: not an outage
    assert stats.bad_points == ("flow",) and stats.uncertain_points == ("mode",)
    assert stats.bad_values == stats.reads and stats.uncertain_values == stats.reads
    assert lines(caplog) == [
        "Point `pump-1.flow` BAD: exception 2 (illegal data address) reading 1 at holding 3000.",
        "Point `pump-1.mode` UNCERTAIN: state 1 is not in the configured enumeration.",
    ]
    [device] = _devices(source)
    out = io.StringIO()
    print_report(_report_with(device), out)
    shown = out.getvalue()
    assert f"samples BAD {stats.bad_values}, UNCERTAIN {stats.uncertain_values}" in shown
    assert "BAD now: flow" in shown and "UNCERTAIN now: mode" in shown
    metrics = render_metrics(_report_with(device)).decode().splitlines()
    assert (
        f'edge_gateway_device_bad_samples_total{{device="pump-1"}} {float(stats.bad_values)}'
        in metrics
    )
    assert 'edge_gateway_device_bad_points{device="pump-1"} 1.0' in metrics


def _report_with(device: dict[str, object]) -> dict[str, object]:
    """The health test's report with this device in it."""
    return {**REPORT, "devices": [device]}


# --- OPC UA: a mistyped NodeId ----------------------------------------------------------


@pytest.fixture(scope="module")
def opcua_server():  # type: ignore[no-untyped-def]
    server = ThreadedServer().start()
    yield server
    server.stop()


async def test_a_mistyped_opcua_node_id_is_bad_now_not_a_silent_streaming_device(
    opcua_server: ThreadedServer, caplog
):
    caplog.set_level(logging.INFO, logger=QUALITY_LOGGER)
    sim = opcua_server.sim
    connection = OpcUaConnection.model_validate(
        {"protocol": "opcua", "endpoint": sim.endpoint, "publishing_interval_ms": 50}
    )
    nodes = [
        node(name="temp", node_id=sim.node_id("Temperature")),
        node(name="speed", node_id="ns=2;s=Pump.Sped"),  # a typo of Pump.Speed
    ]
    tags = [Tag(f"vib.{n.name}", "pump") for n in nodes]
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=1000)
    source = StreamingSource(
        "vib",
        lambda: OpcUaDriver("vib", connection, nodes, tags, SystemClock()),
        queue,
        SystemClock(),
        silence_limit_s=0.5,
    )
    task = asyncio.create_task(source.run_source(), name=source.name)
    try:
        await wait_until(lambda: source.statistics()[0].bad_points == ("speed",), within_s=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stats = source.statistics()[0]
    assert stats.errors == 0 and stats.bad_values == 1 and stats.silent_points == ()
    assert "Point `vib.speed` BAD: not monitored: BadNodeIdUnknown." in lines(caplog)


# --- the silence timer of StreamingSource -----------------------------------------------


class OneTagStream:
    """A StreamingDriver with two tags of which only the first ever delivers."""

    endpoint = "scripted://stream"

    def __init__(self) -> None:
        self._tags = [Tag("can-1.speed", "m"), Tag("can-1.sped", "m")]

    def tags(self) -> list[Tag]:
        return self._tags

    async def __aenter__(self) -> OneTagStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def records(self):  # type: ignore[no-untyped-def]
        while True:
            yield Sample("can-1.speed", 0.0, 1480.0)
            await asyncio.sleep(0.01)


async def test_streaming_source_names_a_point_silent_since_it_connected(caplog):
    caplog.set_level(logging.INFO, logger=QUALITY_LOGGER)
    queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=10)
    source = StreamingSource("can-1", OneTagStream, queue, SystemClock(), silence_limit_s=0.2)

    async def drain() -> None:
        while True:
            await queue.get()

    task = asyncio.create_task(source.run_source(), name=source.name)
    drainer = asyncio.create_task(drain(), name="drain")
    try:
        await wait_until(lambda: source.statistics()[0].silent_points == ("sped",), within_s=3)
    finally:
        for running in (task, drainer):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert [line for line in lines(caplog) if "no sample" in line] == [
        "Point `can-1.sped` has delivered no sample, good or bad, within 0.2 s of `can-1` starting"
        " to stream: check its node id or signal name, and that the device sends it."
    ]
