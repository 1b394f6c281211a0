"""The ThingsBoard IoT Gateway on the same plant as `bench.polling.bench`, for comparison:
the same plant process, same broker kind, CPU and RSS measured the same way.

ThingsBoard's gateway is not a dependency of ours. Install it in a virtual environment of
its own and name its executable:

    python3 -m venv /tmp/tb && /tmp/tb/bin/pip install thingsboard-gateway==3.8.5
    .venv/bin/python -m bench.polling.thingsboard --tb /tmp/tb/bin/thingsboard-gateway \\
        --devices 500 --registers 30 --seconds 60 --layout range

It is configured with its own `tb_gateway.json` (MQTT to a local mosquitto on a free port,
access-token security with a dummy token, remote configuration and statistics off, memory
storage) and one Modbus connector (`modbus.json`) with one slave per device, in one of three
layouts (`--layout`):

- `default`: each register a `timeseries` key read on its own (TB's default): 30 requests and
  30 values per device and poll;
- `range` (like for like with ours): one "wide range" key per device (`"address": "0-29"`,
  `maxRegistersPerRequest`: `--block`), which TB reads in one request and splits into one
  value per register (`r0` ... `r29`): 1 request and 30 values per device and poll;
- `block`: one key of `objectsCount` `--block` registers, read in one request, of which TB
  decodes only the first register (`decode_16bit_uint` once, TB 3.8.5
  `bytes_modbus_uplink_converter.py`): 1 request and 1 value per device and poll. Cheaper
  than ours by what it leaves out; kept to compare with earlier figures.

TB publishes nothing until a ThingsBoard server answers its session-limits RPC: the bench
answers it (`PlatformStandIn`) and counts what TB delivered on the broker (the values of the
window's `v1/gateway/telemetry` messages), so each layout's values/s is measured, not assumed.
(Before 2026-12-08 nothing answered, so TB's figures left out its publishing: its memory
storage grew instead, 47-50 MB per 10 minutes.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.polling.bench import Scenario, cpu_model, cpu_seconds, load_average, rss_mb, slope
from bench.polling.bench import start_plant as start_bench_plant
from tests.support.broker import MosquittoBroker
from uplink.mqtt import LinkSettings, MqttLink, OutgoingMessage

LAYOUTS = ("default", "range", "block")


def slave(
    n: int, port: int, registers: int, period_s: float, layout: str, block: int
) -> dict[str, object]:
    if layout == "default":
        series = [
            {"tag": f"r{i}", "type": "16uint", "functionCode": 3, "objectsCount": 1,
             "address": i, "divider": 10}
            for i in range(registers)
        ]  # fmt: skip
    elif layout == "range":
        series = [
            {"tag": "r${address}", "type": "16uint", "functionCode": 3, "objectsCount": 1,
             "address": f"0-{registers - 1}", "maxRegistersPerRequest": block, "divider": 10}
        ]  # fmt: skip
    else:
        series = [
            {"tag": f"b{start}", "type": "16uint", "functionCode": 3,
             "objectsCount": min(block, registers - start), "address": start}
            for start in range(0, registers, block)
        ]  # fmt: skip
    return {
        "host": "127.0.0.1", "port": port, "type": "tcp", "method": "socket", "unitId": 1,
        "deviceName": f"dev-{n:04d}", "deviceType": "pump", "timeout": 1, "byteOrder": "BIG",
        "wordOrder": "BIG", "retries": 0, "retryOnEmpty": False, "retryOnInvalid": False,
        "pollPeriod": int(period_s * 1000), "connectAttemptTimeMs": 5000,
        "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 5000,
        "attributes": [], "timeseries": series, "attributeUpdates": [], "rpc": [],
    }  # fmt: skip


def write_config(folder: Path, tb: Path, broker_port: int, slaves: list[dict[str, object]]) -> Path:
    """A copy of the package's config folder with our tb_gateway.json and modbus.json."""
    package = subprocess.run(
        [str(tb.parent / "python"), "-c",
         "import thingsboard_gateway, os; print(os.path.dirname(thingsboard_gateway.__file__))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    config = folder / "config"
    shutil.copytree(Path(package) / "config", config)
    gateway = json.loads((config / "tb_gateway.json").read_text())
    gateway["thingsboard"].update(
        host="127.0.0.1", port=broker_port, remoteConfiguration=False, remoteShell=False,
        security={"type": "accessToken", "accessToken": "bench"},
    )  # fmt: skip
    gateway["thingsboard"]["statistics"]["enable"] = False
    gateway["storage"] = {"type": "memory", "read_records_count": 100, "max_records_count": 100000}
    gateway["connectors"] = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
    (config / "tb_gateway.json").write_text(json.dumps(gateway, indent=2))
    (config / "modbus.json").write_text(json.dumps({"master": {"slaves": slaves}}, indent=2))
    return config


# What the stand-in answers: no rate limits (empty maps), TB's own defaults for the rest.
SESSION_LIMITS = {"rateLimits": {}, "gatewayRateLimits": {}, "maxInflightMessages": 100,
                  "maxPayloadSize": 65_536}  # fmt: skip


class PlatformStandIn:
    """What TB needs of a ThingsBoard server to publish at all, on a plain broker, and a count
    of what it published. TB's MQTT client holds every message back until its RPC
    `getSessionLimits` is answered (`tb_device_mqtt.py`, `rate_limits_received`); on a broker
    with nobody answering, TB polls, fills its memory storage and sends nothing. This answers
    as a server without limits would, and counts the values TB publishes on
    `v1/gateway/telemetry` (`{device: [{ts, values}]}`). It runs in a thread of its own with
    its own event loop, through the product's MQTT link."""

    TELEMETRY = "v1/gateway/telemetry"
    RPC_REQUESTS = "v1/devices/me/rpc/request/+"
    RPC_RESPONSE = "v1/devices/me/rpc/response/"

    def __init__(self, port: int, *, answer: bool = True) -> None:
        self._port = port
        self._answer_limits = answer  # False: as a plain broker, TB then publishes nothing
        self.messages = 0
        self.values = 0
        self.limits_answered = 0
        self.devices: set[str] = set()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> PlatformStandIn:
        self._thread.start()
        if not self._ready.wait(30):
            raise SystemExit("the platform stand-in did not subscribe within 30 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def snapshot(self) -> tuple[int, int]:
        return self.messages, self.values

    async def _run(self) -> None:
        settings = LinkSettings("127.0.0.1", self._port, "bench-tb-platform",
                                subscriptions=(self.TELEMETRY, self.RPC_REQUESTS),
                                clean_start=True, inbound_queue_size=10_000)  # fmt: skip
        async with MqttLink(settings) as link:
            await link.wait_connected()
            self._ready.set()
            while not self._stop.is_set():
                try:
                    async with asyncio.timeout(0.5):
                        message = await link.receive()
                except TimeoutError:
                    continue
                if message.topic == self.TELEMETRY:
                    self._count(message.payload)
                else:
                    self._answer(link, message.topic, message.payload)
                link.acknowledge(message)

    def _answer(self, link: MqttLink, topic: str, payload: bytes) -> None:
        if not self._answer_limits or json.loads(payload).get("method") != "getSessionLimits":
            return  # TB times out on the others and goes on
        request_id = topic.rsplit("/", 1)[1]
        body = json.dumps(SESSION_LIMITS).encode()
        link.send(OutgoingMessage(self.RPC_RESPONSE + request_id, body))
        self.limits_answered += 1

    def _count(self, payload: bytes) -> None:
        self.messages += 1
        for device, entries in json.loads(payload).items():
            self.devices.add(device)
            for entry in entries:
                self.values += len(entry.get("values", {}))


def run_once(
    tb: Path,
    scenario: Scenario,
    seconds: float,
    warmup: float,
    layout: str,
    block: int,
    *,
    silent: bool = False,
) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-tb-") as tmp,
        MosquittoBroker() as broker,
        PlatformStandIn(broker.port, answer=not silent) as platform,
    ):
        folder = Path(tmp)
        plant, ports = start_bench_plant(folder, scenario, "endpoints", 0.0)
        log = (folder / "tb.log").open("wb")
        gateway: subprocess.Popen[bytes] | None = None
        try:
            slaves = [
                slave(n, ports[n], scenario.registers, scenario.period_s, layout, block)
                for n in range(scenario.devices)
            ]
            config = write_config(folder, tb, broker.port, slaves)
            gateway = subprocess.Popen(
                [str(tb)], cwd=folder, env=dict(os.environ, TB_GW_CONFIG_DIR=str(config)),
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            time.sleep(warmup)
            if gateway.poll() is not None:
                raise SystemExit(f"thingsboard-gateway exited with {gateway.returncode}: see "
                                 f"{folder / 'tb.log'}")  # fmt: skip
            cpu0, mono0, load0 = cpu_seconds(gateway.pid), time.monotonic(), load_average()
            plant0 = cpu_seconds(plant.pid)
            sent0 = platform.snapshot()
            points = []
            while (elapsed := time.monotonic() - mono0) < seconds:
                points.append((elapsed, rss_mb(gateway.pid)[0]))
                time.sleep(5)
            cpu1, mono1 = cpu_seconds(gateway.pid), time.monotonic()
            plant1 = cpu_seconds(plant.pid)
            sent1 = platform.snapshot()
            rss, _ = rss_mb(gateway.pid)
            points.append((mono1 - mono0, rss))
        finally:
            if gateway is not None:
                gateway.send_signal(signal.SIGTERM)
                try:
                    gateway.wait(30)
                except subprocess.TimeoutExpired:
                    gateway.kill()
                    gateway.wait()
            plant.terminate()
            plant.wait()
            log.close()
    registers_s = scenario.devices * scenario.registers / scenario.period_s
    window = mono1 - mono0
    cpu = (cpu1 - cpu0) / window
    return {
        # What reached the broker in the window: values (keys) and messages per second.
        "values_s": (sent1[1] - sent0[1]) / window,
        "messages_s": (sent1[0] - sent0[0]) / window,
        "devices_seen": float(len(platform.devices)),
        "cpu_pct": 100 * cpu,
        "ms_per_1000_regs": 1000 * cpu / (registers_s / 1000),
        "rss_mb": rss,
        "rss_slope_mb_10min": 600 * slope(points),
        # The plant's CPU shows that TB polls at all (compare with ours at the same rate).
        "plant_cpu_pct": 100 * (plant1 - plant0) / (mono1 - mono0),
        "load": (load0 + load_average()) / 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tb", type=Path, required=True, help="the thingsboard-gateway executable")
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--registers", type=int, default=30)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument(
        "--layout", choices=LAYOUTS, default="range",
        help="range: one request, one value per register (as ours); default: a request per"
        " register; block: one request, one value (see above)",
    )  # fmt: skip
    parser.add_argument(
        "--block", type=int, default=None,
        help="registers per request of the range and block layouts (default: all of a device)",
    )  # fmt: skip
    parser.add_argument(
        "--silent-platform", action="store_true",
        help="leave TB's session-limits RPC unanswered: TB polls and decodes, publishes nothing",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    args = parser.parse_args()
    block = args.block or args.registers
    name = f"TB: {args.devices} dev x {args.registers} reg @ {args.period:g} s, {args.layout}"
    if args.layout != "default":
        name += f" of {block}"
    if args.silent_platform:
        name += ", not publishing"
    scenario = Scenario(name, args.devices, args.registers, args.period)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; ms_per_1000_regs as configured")
    runs = []
    silent = args.silent_platform
    for n in range(args.runs):
        runs.append(
            run_once(
                args.tb, scenario, args.seconds, args.warmup, args.layout, block, silent=silent
            )
        )
        print(f"| {name}, run {n + 1} | " + " | ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()))
    if args.runs > 1:
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| **{name}, median** | " + " | ".join(f"{k} {v:.2f}" for k, v in median.items()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
