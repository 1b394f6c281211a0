"""Polling benchmark: the whole daemon, measured from outside, on a plant of
N Modbus TCP devices x M registers at a fixed period.

Each run is its own processes: this one (orchestration, the broker's central system that
acknowledges every ticket message, the samplers), a real mosquitto, the plant
(`bench.polling.server`: one endpoint per device by default) and `python -m gateway run` on a
generated site (`bench.polling.site`: polling, decoding, threshold detectors, telemetry.db,
ticketing with state.db, the MQTT uplink, health and summaries, exactly as a site runs).

    .venv/bin/python -m bench.polling.bench                      # the issue-17 scenarios
    .venv/bin/python -m bench.polling.bench --devices 500 --registers 30 --period 1
    .venv/bin/python -m bench.polling.bench --devices 500 --seconds 600 --runs 1  # RSS slope
    .venv/bin/python -m bench.polling.bench --devices 500 --fault-period 300 --seconds 1200
    .venv/bin/python -m bench.polling.bench --idle

Measured over the window after `--warmup` (the daemon's process only; never the plant, the
broker or this process):
- CPU: the daemon's process CPU time (utime + stime of every thread, from /proc/PID/stat)
  over the window's wall time, as % of one core and as ms per 1000 registers read per second.
  Process time, not wall: on a shared machine it does not count the time others run.
- RSS: VmRSS sampled every `--rss-every` s; the end value, the peak, and the least-squares
  slope in MB per 10 minutes over the window (the target is flat: within 1 MB / 10 min).
- requests/s and registers/s: successful polls (from the daemon's `/status`) x the plan's
  requests and registers per poll.
- jitter: from telemetry.db after the daemon stopped, per device |interval between two
  consecutive stored polls - period|, p50 and p99 over every device. A poll is stamped when
  its answer is decoded, so the plant's latency counts against us too.
- errors (failed connects and reads), tickets the central system saw, the plant's CPU and the
  machine's load average (the machine is shared: say it beside the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.polling.site import GATEWAY_ID, SITE, write_site
from gateway.config.loader import load_config
from protocols.modbus.config import ModbusTcpConnection
from protocols.modbus.points import plan_for
from simulator.central import CentralSystem
from tests.support.broker import MosquittoBroker, free_loopback_port

REPO = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    devices: int
    registers: int
    period_s: float


# The plant's devices are one asset class with one fault code in areas of 50: by default their
# faults form floods and one storm incident within a second, and few ticket messages flow.
# With these limits every device's fault opens, is enriched and clears as a ticket of its own.
INDEPENDENT_TICKETS: dict[str, object] = {
    "flood_threshold": 1_000_000,
    "group_threshold": 1_000_000,
    "group_wait_s": 0,
}

ISSUE_17_SCENARIOS = (
    Scenario("idle: 1 dev x 1 reg @ 3600 s", 1, 1, 3600.0),
    Scenario("10 dev x 100 reg @ 1 s", 10, 100, 1.0),
    Scenario("100 dev x 30 reg @ 1 s", 100, 30, 1.0),
    Scenario("500 dev x 30 reg @ 1 s", 500, 30, 1.0),
)
COLUMNS = (
    "requests_s", "registers_s", "cpu_pct", "ms_per_1000_regs", "p50_jitter_ms",
    "p99_jitter_ms", "rss_mb", "rss_peak_mb", "rss_slope_mb_10min", "errors", "tickets",
    "plant_cpu_pct", "load",
)  # fmt: skip


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mb(pid: int | str) -> tuple[float, float]:
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value), per second."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))]


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def status(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as answer:
            document: dict[str, object] = json.loads(answer.read())
            return document
    except OSError:
        return None


def polls_and_errors(document: dict[str, object]) -> tuple[int, int]:
    devices = document.get("devices", [])
    assert isinstance(devices, list)
    return sum(d["polls"] for d in devices), sum(d["errors"] for d in devices)


def jitters(telemetry_db: Path, start: float, end: float, period_s: float) -> list[float]:
    with contextlib.closing(sqlite3.connect(f"file:{telemetry_db}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT device, ts FROM sample_groups WHERE ts BETWEEN ? AND ? ORDER BY device, ts",
            (start, end),
        ).fetchall()
    result: list[float] = []
    for _, group in itertools.groupby(rows, key=lambda row: row[0]):
        stamps = [ts for _, ts in group]
        result += [abs(b - a - period_s) for a, b in itertools.pairwise(stamps)]
    return result


def plan_size(site: Path) -> tuple[int, int]:
    loaded = load_config(site / "gateway.yaml")
    _, first = loaded.devices[0]
    assert isinstance(first.connection, ModbusTcpConnection)
    plan = plan_for(first.values, first.connection).all_requests
    return len(plan), sum(request.count for request in plan)


def start_plant(
    directory: Path, scenario: Scenario, layout: str, fault_period_s: float
) -> tuple[subprocess.Popen[bytes], list[int]]:
    port_file = directory / "ports"
    plant = subprocess.Popen(
        [sys.executable, "-m", "bench.polling.server", str(port_file),
         "--devices", str(scenario.devices), "--registers", str(scenario.registers),
         "--layout", layout, "--fault-period", str(fault_period_s)],
        cwd=REPO,
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_file.exists():
        if time.monotonic() > deadline or plant.poll() is not None:
            plant.kill()
            raise SystemExit("the benchmark plant did not start")
        time.sleep(0.05)
    return plant, [int(p) for p in port_file.read_text().split()]


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


async def wait_ready(port: int, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited at start with {daemon.returncode}")
        if ready(port):
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the daemon did not become ready")


async def run_once(
    scenario: Scenario,
    *,
    seconds: float,
    warmup: float,
    layout: str = "endpoints",
    fault_period_s: float = 0.0,
    independent_tickets: bool = False,
    rss_every_s: float = 5.0,
    keep: Path | None = None,
    daemon_prefix: tuple[str, ...] = (),
    py_spy: Path | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-polling-") as tmp, MosquittoBroker() as broker:
        directory = keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        plant, ports = start_plant(directory, scenario, layout, fault_period_s)
        health_port = free_loopback_port()
        central = CentralSystem(
            "127.0.0.1", broker.port, "factory", SITE, GATEWAY_ID, output=io.StringIO()
        )
        central_task = asyncio.create_task(central.run_central(), name="central")
        log = (directory / "daemon.log").open("wb")
        daemon: subprocess.Popen[bytes] | None = None
        try:
            site = write_site(
                directory / "site",
                devices=scenario.devices,
                registers=scenario.registers,
                period_s=scenario.period_s,
                ports=ports,
                layout=layout,
                broker_port=broker.port,
                health_port=health_port,
                ticketing=INDEPENDENT_TICKETS if independent_tickets else None,
            )
            requests_per_poll, registers_per_poll = plan_size(site)
            daemon = subprocess.Popen(  # noqa: ASYNC220 (started once, returns at once)
                [sys.executable, *daemon_prefix, "-m", "gateway", "run",
                 str(site / "gateway.yaml")],
                cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            await wait_ready(health_port, daemon)
            await asyncio.sleep(warmup)
            first = status(health_port)
            assert first is not None
            polls0, _ = polls_and_errors(first)
            cpu0, plant0, mono0, wall0 = (
                cpu_seconds(daemon.pid),
                cpu_seconds(plant.pid),
                time.monotonic(),
                time.time(),
            )
            load0 = load_average()
            spy = None
            if py_spy is not None:
                spy = subprocess.Popen(  # noqa: ASYNC220 (started once, returns at once)
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                     str(daemon.pid), "--duration", str(int(seconds)), "--rate", "50",
                     "--format", "raw", "--output", str(py_spy)],
                    stdout=subprocess.DEVNULL,
                )  # fmt: skip
            rss_points: list[tuple[float, float]] = []
            while (elapsed := time.monotonic() - mono0) < seconds:
                rss_points.append((elapsed, rss_mb(daemon.pid)[0]))
                await asyncio.sleep(min(rss_every_s, max(0.0, seconds - elapsed)))
            cpu1, plant1, mono1, wall1 = (
                cpu_seconds(daemon.pid),
                cpu_seconds(plant.pid),
                time.monotonic(),
                time.time(),
            )
            rss, rss_peak = rss_mb(daemon.pid)
            rss_points.append((mono1 - mono0, rss))
            last = status(health_port)
            assert last is not None
            polls1, errors = polls_and_errors(last)
            load1 = load_average()
            tickets = central.statistics().tickets_seen
            if spy is not None:
                spy.wait(30)
        finally:
            if daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(60)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
            plant.terminate()
            plant.wait()
            central_task.cancel()
            await asyncio.gather(central_task, return_exceptions=True)
            log.close()
        if daemon.returncode != 0:
            print((directory / "daemon.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit(f"the daemon stopped with {daemon.returncode}")
        found = jitters(site / "var" / "telemetry.db", wall0, wall1, scenario.period_s)
    wall = mono1 - mono0
    cpu = (cpu1 - cpu0) / wall
    registers_s = (polls1 - polls0) * registers_per_poll / wall
    return {
        "requests_s": (polls1 - polls0) * requests_per_poll / wall,
        "registers_s": registers_s,
        "cpu_pct": 100 * cpu,
        "ms_per_1000_regs": 1000 * cpu / (registers_s / 1000) if registers_s else 0.0,
        "p50_jitter_ms": 1000 * percentile(found, 0.5),
        "p99_jitter_ms": 1000 * percentile(found, 0.99),
        "rss_mb": rss,
        "rss_peak_mb": rss_peak,
        "rss_slope_mb_10min": 600 * slope(rss_points),
        "errors": errors,
        "tickets": tickets,
        "plant_cpu_pct": 100 * (plant1 - plant0) / wall,
        "load": (load0 + load1) / 2,
    }


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
    parser.add_argument("--devices", type=int, help="one scenario instead of the issue's four")
    parser.add_argument("--registers", type=int, default=30)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--idle", action="store_true", help="only the idle scenario")
    parser.add_argument(
        "--layout", choices=("endpoints", "units"), default="endpoints",
        help="one server endpoint per device, or unit ids on shared ports",
    )  # fmt: skip
    parser.add_argument(
        "--fault-period", type=float, default=0.0,
        help="each device plays a fault for a tenth of this period (tickets flow)",
    )  # fmt: skip
    parser.add_argument(
        "--independent-tickets", action="store_true",
        help="no floods or storm incidents: every device's fault is a ticket of its own",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="the median of the runs is shown")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--rss-every", type=float, default=5.0, help="RSS sampling period")
    parser.add_argument("--keep", type=Path, help="keep the site, logs and telemetry.db here")
    parser.add_argument(
        "--profile", type=Path, help="run the daemon under cProfile, dumping to this file at stop"
    )
    parser.add_argument(
        "--py-spy", type=Path, help="sample the daemon with py-spy over the window (raw stacks)"
    )
    args = parser.parse_args()
    if args.idle:
        scenarios: tuple[Scenario, ...] = (ISSUE_17_SCENARIOS[0],)
    elif args.devices is not None:
        name = f"{args.devices} dev x {args.registers} reg @ {args.period:g} s"
        scenarios = (Scenario(name, args.devices, args.registers, args.period),)
    else:
        scenarios = ISSUE_17_SCENARIOS
    prefix = ("-m", "cProfile", "-o", str(args.profile.resolve())) if args.profile else ()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()};"
          f" {args.runs} run(s) of {args.seconds:g} s after {args.warmup:g} s warm-up,"
          f" layout {args.layout}, fault period {args.fault_period:g} s")  # fmt: skip
    print("| scenario | " + " | ".join(COLUMNS) + " |")
    print("| --- | " + " | ".join("---" for _ in COLUMNS) + " |", flush=True)
    for scenario in scenarios:
        runs = []
        for n in range(args.runs):
            result = asyncio.run(
                run_once(
                    scenario,
                    seconds=args.seconds,
                    warmup=args.warmup,
                    layout=args.layout,
                    fault_period_s=args.fault_period,
                    independent_tickets=args.independent_tickets,
                    rss_every_s=args.rss_every,
                    keep=args.keep,
                    daemon_prefix=prefix,
                    py_spy=args.py_spy,
                )
            )
            runs.append(result)
            print(row(f"{scenario.name}, run {n + 1}", result), flush=True)
        if args.runs > 1:
            median = {c: statistics.median(r[c] for r in runs) for c in COLUMNS}
            print(row(f"**{scenario.name}, median**", median), flush=True)


if __name__ == "__main__":
    main()
