"""RSS soak: the gateway as its own process against the demo plant
(the simulator's Modbus pump and OPC UA vibration sensor, in another process), a real
mosquitto and the simulated central system acknowledging every ticket. The gateway's RSS
(VmRSS from /proc) is sampled every `--sample-s`; the table gives start, end, peak and the
least-squares slope in MB per hour (the target is flat within 10 MB over one hour).

    .venv/bin/python -m bench.uplink.soak --duration-s 3600

The first `--warmup-s` seconds (imports, first spectra, baseline learning) are left out of
the slope.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.faults.support import running_central
from tests.support.broker import MosquittoBroker, free_loopback_port
from tests.support.site import REPO


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600 if var else 0.0


def make_config(folder: Path, broker_port: int, modbus_port: int, opcua_port: int) -> Path:
    config_dir = folder / "config"
    shutil.copytree(REPO / "configs", config_dir, ignore=shutil.ignore_patterns("var", "schema"))
    gateway_yaml = config_dir / "gateway.yaml"
    gw = yaml.safe_load(gateway_yaml.read_text())
    gw["uplink"].update(port=broker_port, health_period_s=10.0, summary_period_s=10.0)
    gw["storage"]["directory"] = str(folder / "var")
    gateway_yaml.write_text(yaml.safe_dump(gw, sort_keys=False))
    for device_file in (config_dir / "devices").glob("*.yaml"):
        device = yaml.safe_load(device_file.read_text())
        connection = device["connection"]
        if connection["protocol"] == "modbus_tcp":
            connection["port"] = modbus_port
        elif connection["protocol"] == "opcua":
            connection["endpoint"] = connection["endpoint"].replace(":4840", f":{opcua_port}")
        else:
            device_file.unlink()  # the CAN motor needs a pseudo-terminal pair: not in the soak
            continue
        device_file.write_text(yaml.safe_dump(device, sort_keys=False))
    return gateway_yaml


async def soak(duration_s: float, sample_s: float, warmup_s: float) -> dict[str, float]:
    modbus_port, opcua_port = free_loopback_port(), free_loopback_port()
    with tempfile.TemporaryDirectory() as folder, MosquittoBroker() as broker:
        gateway_yaml = make_config(Path(folder), broker.port, modbus_port, opcua_port)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = (Path(folder) / "gateway.log").open("wb")
        plant = subprocess.Popen(  # noqa: ASYNC220 (started once, returns at once)
            [sys.executable, "-m", "simulator", "plant", "--modbus-port", str(modbus_port),
             "--opcua-port", str(opcua_port)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(3)
        gateway = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "gateway", "run", str(gateway_yaml)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        points: list[tuple[float, float]] = []
        try:
            async with running_central(broker.port, "edge-01") as central:
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < duration_s:
                    if gateway.poll() is not None:
                        raise RuntimeError("the gateway exited during the soak")
                    points.append((elapsed, rss_mb(gateway.pid)))
                    await asyncio.sleep(sample_s)
                tickets = central.statistics().tickets_seen
        finally:
            for process in (gateway, plant):
                process.send_signal(signal.SIGTERM)
                process.wait(30)
            log.close()
    steady = [(t, v) for t, v in points if t >= warmup_s]
    return {
        "duration_s": duration_s,
        "rss_start": steady[0][1] if steady else points[0][1],
        "rss_end": points[-1][1],
        "rss_peak": max(v for _, v in points),
        "slope": slope_per_hour(steady),
        "tickets": tickets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration-s", type=float, default=3600.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    r = asyncio.run(soak(args.duration_s, args.sample_s, args.warmup_s))
    print("| soak | RSS after warm-up | RSS at end | peak | slope after warm-up | tickets |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {r['duration_s']:.0f} s | {r['rss_start']:.1f} MB | {r['rss_end']:.1f} MB | "
          f"{r['rss_peak']:.1f} MB | {r['slope']:+.2f} MB/h | {r['tickets']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
