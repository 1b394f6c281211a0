"""The ThingsBoard IoT Gateway on the same plant as `bench.polling.bench`, for comparison:
the same plant process, same broker kind, CPU and RSS measured the same way.

ThingsBoard's gateway is not a dependency of ours. Install it in a virtual environment of
its own and name its executable:

    python3 -m venv /tmp/tb && /tmp/tb/bin/pip install thingsboard-gateway==3.8.5
    .venv/bin/python -m bench.polling.thingsboard --tb /tmp/tb/bin/thingsboard-gateway \\
        --devices 500 --registers 30 --seconds 60

It is configured with its own `tb_gateway.json` (MQTT to a local mosquitto on a free port,
access-token security with a dummy token, remote configuration and statistics off, memory
storage) and one Modbus connector (`modbus.json`) with one slave per device, each register a
`timeseries` read on its own (TB's default) or in blocks of `--block` registers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.polling.bench import Scenario, cpu_model, cpu_seconds, load_average, rss_mb, slope
from bench.polling.bench import start_plant as start_bench_plant
from tests.support.broker import MosquittoBroker


def slave(n: int, port: int, registers: int, period_s: float, block: int) -> dict[str, object]:
    if block <= 1:
        series = [
            {"tag": f"r{i}", "type": "16uint", "functionCode": 3, "objectsCount": 1,
             "address": i, "divider": 10}
            for i in range(registers)
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


def run_once(
    tb: Path, scenario: Scenario, seconds: float, warmup: float, block: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-tb-") as tmp, MosquittoBroker() as broker:
        folder = Path(tmp)
        plant, ports = start_bench_plant(folder, scenario, "endpoints", 0.0)
        log = (folder / "tb.log").open("wb")
        gateway: subprocess.Popen[bytes] | None = None
        try:
            slaves = [
                slave(n, ports[n], scenario.registers, scenario.period_s, block)
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
            points = []
            while (elapsed := time.monotonic() - mono0) < seconds:
                points.append((elapsed, rss_mb(gateway.pid)[0]))
                time.sleep(5)
            cpu1, mono1 = cpu_seconds(gateway.pid), time.monotonic()
            plant1 = cpu_seconds(plant.pid)
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
    cpu = (cpu1 - cpu0) / (mono1 - mono0)
    return {
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
        "--block", type=int, default=1, help="registers per request (1: TB's default)"
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    args = parser.parse_args()
    name = f"TB: {args.devices} dev x {args.registers} reg @ {args.period:g} s, block {args.block}"
    scenario = Scenario(name, args.devices, args.registers, args.period)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; registers/s assumed as configured")
    runs = []
    for n in range(args.runs):
        runs.append(run_once(args.tb, scenario, args.seconds, args.warmup, args.block))
        print(f"| {name}, run {n + 1} | " + " | ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()))
    if args.runs > 1:
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| **{name}, median** | " + " | ".join(f"{k} {v:.2f}" for k, v in median.items()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
