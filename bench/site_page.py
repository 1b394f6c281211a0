"""Site page benchmark: the gateway's CPU with the page off, on with nobody looking,
and with browsers watching, on the demo plant (Modbus, OPC UA with 16384-sample waveforms
every second, CAN, the vibration detector, ticketing, the uplink to a local mosquitto).

    .venv/bin/python -m bench.site_page                 # 20 s per scenario
    .venv/bin/python -m bench.site_page --seconds 60

Each scenario runs a fresh gateway process on the demo's configuration (the plant simulator,
broker and central system run beside it and are not counted), waits `--warmup` seconds, then
counts the gateway's CPU time (user + system, every thread, from /proc) over `--seconds`. A
"viewer" is what an open browser tab costs the gateway: one server-sent-events connection to
the page's live feed, read as fast as it comes (the bench reads it in a thread of its own).
The last column is `LiveValues.add`, the only work the page adds to the pipeline while nobody
looks, timed alone per sample.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.cli.demo import find_mosquitto, free_port, prepare_config
from gateway.config.examples import DEMO_SITE, example_site
from gateway.core.records import Sample
from gateway.runtime.site.live_values import LiveValues

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    page: bool
    viewers: tuple[str, ...] = ()


SCENARIOS = (
    Scenario("page off", False),
    Scenario("page on, nobody looking", True),
    Scenario("1 viewer: overview", True, ("/",)),
    Scenario("1 viewer: vibration page", True, ("/vibration/pump-1-vib.vib_de",)),
    Scenario("4 viewers: overview, device, vibration, tickets", True,
             ("/", "/device/pump-1", "/vibration/pump-1-vib.vib_de", "/tickets")),
)  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Viewer(threading.Thread):
    """One browser tab's live connection: reads the event stream until told to stop."""

    def __init__(self, port: int, page: str) -> None:
        super().__init__(daemon=True)
        self.port, self.page = port, page
        self.events = 0
        self.bytes = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        # Longer than the page's keep-alive comment (25 s): an unchanged page sends nothing.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", f"/live?page={self.page}")
        reply = conn.getresponse()
        while not self.stopping.is_set():
            try:
                line = reply.fp.readline()
            except OSError:
                break
            if not line:
                break
            self.bytes += len(line)
            self.events += line.startswith(b"data: ")
        conn.close()


def run_scenario(
    scenario: Scenario, config_dir: Path, site_port: int, warmup_s: float, seconds: float
) -> dict[str, float]:
    gateway_yaml = config_dir / "gateway.yaml"
    gw = yaml.safe_load(gateway_yaml.read_text())
    gw["site_page"] = {"host": "127.0.0.1", "port": site_port if scenario.page else None}
    gateway_yaml.write_text(yaml.safe_dump(gw, sort_keys=False))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", str(gateway_yaml)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    viewers: list[Viewer] = []
    try:
        time.sleep(warmup_s)
        viewers = [Viewer(site_port, page) for page in scenario.viewers]
        for viewer in viewers:
            viewer.start()
        time.sleep(2.0)  # connections open and first renders done before counting
        before, started = cpu_seconds(proc.pid), time.monotonic()
        events_before = sum(v.events for v in viewers)
        bytes_before = sum(v.bytes for v in viewers)
        time.sleep(seconds)
        used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - started
        return {
            "cpu_pct": 100.0 * used / elapsed,
            "events_s": (sum(v.events for v in viewers) - events_before) / elapsed,
            "kB_s": (sum(v.bytes for v in viewers) - bytes_before) / elapsed / 1e3,
        }
    finally:
        for viewer in viewers:
            viewer.stopping.set()
        proc.terminate()
        proc.wait(30)


def live_values_ns_per_sample() -> float:
    live = LiveValues()
    batch = [Sample(f"dev-{i // 30}.r{i % 30}", 1.0, float(i)) for i in range(3000)]
    runs = 200
    seconds = min(timeit.repeat(lambda: live.add(batch), number=runs, repeat=5))
    return seconds / runs / len(batch) * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    args = parser.parse_args()
    mosquitto = find_mosquitto()
    if mosquitto is None:
        print("mosquitto is not installed", file=sys.stderr)
        return 69
    with tempfile.TemporaryDirectory(prefix="bench-site-page-") as tmp:
        workdir = Path(tmp)
        plan = prepare_config(example_site(DEMO_SITE).path, workdir)
        (workdir / "mosquitto.conf").write_text(
            f"listener {plan.broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        helpers = [
            subprocess.Popen([mosquitto, "-c", str(workdir / "mosquitto.conf")], **quiet),
            subprocess.Popen([sys.executable, "-m", "simulator", "plant", "--modbus-port",
                              str(plan.modbus_port), "--opcua-port", str(plan.opcua_port),
                              "--can-tty", str(plan.can_tty)], **quiet),
            subprocess.Popen([sys.executable, "-m", "simulator", "central", "--port",
                              str(plan.broker_port), "--prefix", plan.prefix, "--site",
                              plan.site, "--gateway", plan.gateway_id], **quiet),
        ]  # fmt: skip
        try:
            time.sleep(5.0)
            site_port = free_port()
            print(f"{'scenario':<52} {'cpu %':>7} {'events/s':>9} {'kB/s':>7}")
            for scenario in SCENARIOS:
                shutil.rmtree(workdir / "var", ignore_errors=True)
                row = run_scenario(scenario, plan.config_dir, site_port, args.warmup,
                                   args.seconds)  # fmt: skip
                print(f"{scenario.name:<52} {row['cpu_pct']:>7.2f} {row['events_s']:>9.2f}"
                      f" {row['kB_s']:>7.1f}", flush=True)  # fmt: skip
        finally:
            for helper in reversed(helpers):
                helper.terminate()
                helper.wait(30)
    print(f"LiveValues.add: {live_values_ns_per_sample():.0f} ns per sample")
    return 0


if __name__ == "__main__":
    sys.exit(main())
