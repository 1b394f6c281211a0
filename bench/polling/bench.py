"""Polling benchmark (issue 3): N Modbus TCP devices x M registers at a fixed period, with the
full pipeline running (decoding to engineering units, threshold detectors, telemetry store).

Each run is three processes: this one (orchestration only), the pymodbus server
(`bench.polling.server`) and the measured gateway (`bench.polling.measure`, which loads a
generated site folder with `load_config` and wires it with `gateway.app`'s own builders; see
its docstring for what is and is not included). Only the gateway process's CPU is counted.

    .venv/bin/python -m bench.polling.bench                      # the three issue-3 scenarios
    .venv/bin/python -m bench.polling.bench --devices 500 --registers 30 --period 1
    .venv/bin/python -m bench.polling.bench --idle --runs 1

Prints one row per run and the median of the runs per scenario: requests/s, registers/s,
samples stored/s, gateway CPU (% of one core, the event-loop thread's share, and ms per 1000
registers/s), p99 poll jitter, RSS now and at peak, poll errors, skipped ticks, findings, and
tasks that ignored the first cancel at shutdown. "Idle" is the whole gateway with 10 devices
x 30 registers configured at a slow 10 s period: everything runs, with almost nothing to do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.polling.site import ports_needed, write_site


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    devices: int
    registers: int
    period_s: float


ISSUE_3_SCENARIOS = (
    Scenario("500 dev x 30 reg @ 1 s", 500, 30, 1.0),
    Scenario("10 dev x 100 reg @ 1 s", 10, 100, 1.0),
    Scenario("idle: 10 dev x 30 reg @ 10 s", 10, 30, 10.0),
)
COLUMNS = (
    "requests_s", "registers_s", "stored_s", "cpu_pct", "loop_cpu_pct", "ms_per_1000_regs",
    "p99_jitter_ms", "rss_mb", "rss_peak_mb", "errors", "skipped", "findings", "stubborn_tasks",
)  # fmt: skip


def start_server(port_file: Path, registers: int, ports: int) -> tuple[subprocess.Popen[bytes],
                                                                          list[int]]:  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.polling.server", str(port_file),
         "--registers", str(registers), "--ports", str(ports)]
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not port_file.exists():
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("the benchmark server did not start")
        time.sleep(0.05)
    return server, [int(p) for p in port_file.read_text().split()]


def run_once(scenario: Scenario, seconds: float, warmup: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-polling-") as tmp:
        directory = Path(tmp)
        ports = ports_needed(scenario.devices)
        server, port_numbers = start_server(directory / "ports", scenario.registers, ports)
        try:
            site = write_site(
                directory / "site",
                devices=scenario.devices,
                registers=scenario.registers,
                period_s=scenario.period_s,
                ports=port_numbers,
            )
            gateway = subprocess.run(
                [sys.executable, "-m", "bench.polling.measure", str(site),
                 "--seconds", str(seconds), "--warmup", str(warmup)],
                stdout=subprocess.PIPE, check=True,
            )  # fmt: skip
        finally:
            server.terminate()
            server.wait()
    result: dict[str, float] = json.loads(gateway.stdout.decode().splitlines()[-1])
    return result


def row(name: str, values: dict[str, float]) -> str:
    return f"| {name} | " + " | ".join(f"{values[c]:.2f}" for c in COLUMNS) + " |"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, help="one scenario instead of the issue's three")
    parser.add_argument("--registers", type=int, default=30)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--idle", action="store_true", help="only the idle scenario")
    parser.add_argument("--runs", type=int, default=3, help="the median of the runs is shown")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    if args.idle:
        scenarios: tuple[Scenario, ...] = (ISSUE_3_SCENARIOS[2],)
    elif args.devices is not None:
        name = f"{args.devices} dev x {args.registers} reg @ {args.period:g} s"
        scenarios = (Scenario(name, args.devices, args.registers, args.period),)
    else:
        scenarios = ISSUE_3_SCENARIOS
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()};"
          f" {args.runs} run(s) of {args.seconds:g} s after {args.warmup:g} s warm-up")  # fmt: skip
    print("| scenario | " + " | ".join(COLUMNS) + " |")
    print("| --- | " + " | ".join("---" for _ in COLUMNS) + " |", flush=True)
    for scenario in scenarios:
        runs = []
        for n in range(args.runs):
            runs.append(run_once(scenario, args.seconds, args.warmup))
            print(row(f"{scenario.name}, run {n + 1}", runs[-1]), flush=True)
        if args.runs > 1:
            median = {c: statistics.median(r[c] for r in runs) for c in COLUMNS}
            print(row(f"**{scenario.name}, median**", median), flush=True)


if __name__ == "__main__":
    main()
