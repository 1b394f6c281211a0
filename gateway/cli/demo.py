"""`edge-gateway demo`: the whole chain on one machine.

Starts a local mosquitto on a free port, the plant simulator, the simulated central ticket system
and the gateway on a copy of the demo site shipped in the package (`gateway.config.examples`;
ports rewritten to the free ones chosen here), each as its own process with its output
prefixed. Ctrl-C or `--duration` stops them in reverse order; nothing is left running. The
summary is read from the gateway's own state.db.

The loop runs to its end within a short demo: the central system's technician
accepts, starts and closes each ticket with `repaired: true`, the plant reads that repair from
the broker and replaces the pump's bearing, the gateway verifies the repair over a short
window and publishes `verified`, and the requester signs off (`confirm`): CLOSED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.config.examples import DEMO_SITE, example_site
from gateway.config.loader import load_config
from gateway.core.exit_codes import EX_UNAVAILABLE
from gateway.core.interfaces import TicketEvent
from gateway.core.records import Quality, Ticket, TicketState
from gateway.store import StateDatabase, TelemetryStore

SCENARIO_FAULT = "threshold.high"  # the demo pump's bearing temperature crosses its hi limit
SCENARIO_TAG = "pump-1.bearing_temp"  # the tag of that rule (configs/devices/pump-1.yaml)
SITE_PAGE_PORT = 8080  # the local site page, or the next free port
# The simulated central system's people (simulator/central.py, `WorkPlan`): each takes this
# long before each step: a moment a person would take, and time for the plant's second ticket
# to open before the first repair replaces the bearing behind both.
PERSON_PAUSE_S = 3.0
REQUESTER = "requester-demo"  # `WorkPlan.requester`: who signs a verified repair off
# Windows of a real site are hours (a repair verified over 24 h of running time); the demo's
# fit in its minute. Evidence and baseline over the last minute (buckets of 6 s), so the
# baseline of a ticket opened half a minute in is the healthy pump it saw first.
DEMO_TICKETING: dict[str, Any] = {
    "verification_window_h": 10.0 / 3600.0,  # 10 s of running time after the repair
    "evidence_window_s": 60.0,
    "require_signoff": True,
    "signoff_actors": [REQUESTER],
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_or_free(preferred: int) -> int:
    """`preferred` when nothing listens on it (an address a newcomer can remember), else any
    free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_mosquitto() -> str | None:
    """Find mosquitto, installing the Debian package when missing and possible."""
    found = find_mosquitto()
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    print("demo: mosquitto is missing; installing the Debian package with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "mosquitto"]):
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            return None
    return find_mosquitto()


@dataclass(frozen=True)
class DemoPlan:
    config_dir: Path
    gateway_yaml: Path
    state_db: Path
    broker_port: int
    modbus_port: int
    opcua_port: int
    can_tty: Path
    site_page_port: int
    prefix: str
    site: str
    gateway_id: str


def prepare_config(source: Path, workdir: Path) -> DemoPlan:
    """Copy the example config and point it at the free ports chosen for this run."""
    config_dir = workdir / "config"
    # Not the state of an earlier run, the schema copies, nor the other example sites.
    shutil.copytree(source, config_dir, ignore=shutil.ignore_patterns("var", "schema", "examples"))
    gateway_yaml = config_dir / "gateway.yaml"
    gw: dict[str, Any] = yaml.safe_load(gateway_yaml.read_text())
    broker_port, modbus_port, opcua_port = free_port(), free_port(), free_port()
    can_tty = workdir / "can-gw"  # the gateway's end of the simulated USB-CAN adapter
    gw.setdefault("uplink", {})["port"] = broker_port
    gw["uplink"]["host"] = "127.0.0.1"
    gw.setdefault("storage", {})["directory"] = str(workdir / "var")
    gw["ticketing"] = {**(gw.get("ticketing") or {}), **DEMO_TICKETING}
    # The local site page, on loopback: devices, tickets and the spectra behind them.
    site_page_port = port_or_free(SITE_PAGE_PORT)
    gw["site_page"] = {**gw.get("site_page", {}), "host": "127.0.0.1", "port": site_page_port}
    gateway_yaml.write_text(yaml.safe_dump(gw, sort_keys=False))
    for device_file in sorted((config_dir / "devices").glob("*.yaml")):
        device: dict[str, Any] = yaml.safe_load(device_file.read_text())
        conn = device.get("connection", {})
        # The simulator serves every device of the example site, one port per protocol.
        if conn.get("protocol") == "modbus_tcp":
            conn["host"], conn["port"] = "127.0.0.1", modbus_port
        elif conn.get("protocol") == "opcua":
            path = conn["endpoint"].split("/", 3)[3] if conn["endpoint"].count("/") >= 3 else ""
            conn["endpoint"] = f"opc.tcp://127.0.0.1:{opcua_port}/{path}"
        elif conn.get("protocol") == "can" and conn.get("interface") == "slcan":
            conn["channel"] = str(can_tty)
        device_file.write_text(yaml.safe_dump(device, sort_keys=False))
    return DemoPlan(
        config_dir=config_dir,
        gateway_yaml=gateway_yaml,
        state_db=workdir / "var" / "state.db",
        broker_port=broker_port,
        modbus_port=modbus_port,
        opcua_port=opcua_port,
        can_tty=can_tty,
        site_page_port=site_page_port,
        prefix=gw.get("uplink", {}).get("topic_prefix", "factory"),
        site=gw["site"],
        gateway_id=gw["gateway_id"],
    )


class Child:
    """One child process whose output is printed line by line with a prefix."""

    def __init__(self, label: str, proc: asyncio.subprocess.Process) -> None:
        self.label = label
        self.proc = proc
        self.pump = asyncio.create_task(self._forward(), name=f"demo-output[{label}]")

    async def _forward(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            print(f"[{self.label:<8}] {line}", flush=True)

    async def stop(self, grace_s: float = 8.0) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                print(
                    f"demo: `{self.label}` did not stop in {grace_s:.0f} s; killing it", flush=True
                )
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.pump, 2.0)


async def spawn(label: str, *argv: str) -> Child:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        # Own process group: a Ctrl-C reaches the demo, which then stops children in order.
        start_new_session=True,
    )
    return Child(label, proc)


async def wait_for_port(port: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def wait_for_plant(plan: DemoPlan, within_s: float) -> bool:
    ports = all(
        await asyncio.gather(
            wait_for_port(plan.modbus_port, within_s), wait_for_port(plan.opcua_port, within_s)
        )
    )
    deadline = time.monotonic() + within_s
    while not await asyncio.to_thread(plan.can_tty.exists):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return ports


@dataclass(frozen=True)
class Summary:
    tickets: tuple[Ticket, ...]
    # device id -> GOOD samples kept in telemetry.db (raw data stays on site)
    good_samples: tuple[tuple[str, int], ...] = ()
    # The scenario ticket's history (opened ... closed), and when the demo started (epoch s).
    scenario_events: tuple[TicketEvent, ...] = ()
    started_at: float = 0.0

    @property
    def scenario(self) -> Ticket | None:
        return next((t for t in self.tickets if t.fault_code == SCENARIO_FAULT), None)

    @property
    def scenario_acknowledged(self) -> bool:
        return self.scenario is not None and _acked(self.scenario)

    @property
    def scenario_signed_off(self) -> bool:
        """The whole loop: the scenario ticket CLOSED by the requester's sign-off."""
        ticket = self.scenario
        return (
            ticket is not None
            and ticket.state is TicketState.CLOSED
            and "sign_off" in ticket.attributes
            and any(_is_sign_off(e) for e in self.scenario_events)
        )

    def timeline(self) -> str:
        """When each step of the scenario ticket happened, in seconds of the run."""
        firsts: dict[str, float] = {}
        for event in self.scenario_events:
            if event.kind != "verified" or event.detail.get("result") == "pass":
                firsts.setdefault(event.kind, event.ts)
        steps = ("opened", "accepted", "in_progress", "repaired", "verified", "closed")
        return ", ".join(
            f"{kind} +{firsts[kind] - self.started_at:.1f} s" for kind in steps if kind in firsts
        )

    def lines(self) -> list[str]:
        enriched = sum(1 for t in self.tickets if t.occurrences > 1 or t.revision > 2)
        lines = [
            "Demo summary",
            f"  tickets opened:        {len(self.tickets)}",
            f"  tickets enriched:      {enriched}  (re-triggers merged into an open ticket)",
            f"  tickets acknowledged:  {sum(1 for t in self.tickets if _acked(t))}"
            "  (by the simulated central system)",
        ]
        responded = [t for t in self.tickets if "response" in t.attributes]
        closed = [t for t in self.tickets if t.state is TicketState.CLOSED]
        lines += [
            f"  tickets accepted:      {len(responded)}  (by a technician: first response)",
            f"  tickets closed:        {len(closed)}  (repair verified, then signed off)",
        ]
        lines += [
            f"    {t.id}  {t.asset}  {t.fault_code}  {t.priority.value}  {t.state.value}"
            + (f"  by {t.attributes['response'].get('by')}" if "response" in t.attributes else "")
            for t in self.tickets
        ]
        if self.good_samples:
            lines.append("  good samples kept on site (telemetry.db), per device:")
            lines += [f"    {device:<12} {count}" for device, count in self.good_samples]
        lines.append(
            f"  scenario ticket ({SCENARIO_FAULT}) acknowledged: "
            f"{'yes' if self.scenario_acknowledged else 'NO'}"
        )
        signer = self.scenario.attributes.get("sign_off", {}) if self.scenario else {}
        lines.append(
            f"  scenario ticket ({SCENARIO_FAULT}) closed with a sign-off: "
            + (f"yes, by {signer.get('by')}" if self.scenario_signed_off else "NO")
        )
        if self.scenario_events:
            lines.append(f"    {self.timeline()}")
            lines += self._verification_lines()
        return lines

    def _verification_lines(self) -> list[str]:
        """The verdict that let the scenario ticket close: its tag before and after."""
        verdicts = [e.detail for e in self.scenario_events if e.kind == "verified"]
        if not verdicts:
            return []
        last = verdicts[-1]
        figure = last.get("figures", {}).get(SCENARIO_TAG)
        compared = (
            f"; {SCENARIO_TAG} {float(figure['before']):.1f} before the fault, "
            f"{float(figure['after']):.1f} after"
            if isinstance(figure, dict)
            else ""
        )
        return [
            f"    verification: {last.get('result')} over "
            f"{float(last.get('running_s', 0.0)):.1f} s of running time{compared}"
        ]


def _acked(ticket: Ticket) -> bool:
    return ticket.acknowledged_at is not None


def _is_sign_off(event: TicketEvent) -> bool:
    return event.kind == "closed" and event.detail.get("reason") == "signed off"


async def read_summary(plan: DemoPlan, started_at: float) -> Summary:
    """Read after the gateway stopped; state.db is opened read-only."""
    if not await asyncio.to_thread(plan.state_db.exists):
        return Summary((), started_at=started_at)
    store = await StateDatabase.open(plan.state_db, read_only=True)
    try:
        tickets = tuple(await store.tickets.list_tickets())
        scenario = next((t for t in tickets if t.fault_code == SCENARIO_FAULT), None)
        events = await store.tickets.ticket_events(scenario.id) if scenario else []
    finally:
        await store.close()
    return Summary(tickets, await count_good_samples(plan), tuple(events), started_at)


async def count_good_samples(plan: DemoPlan) -> tuple[tuple[str, int], ...]:
    telemetry_db = plan.state_db.with_name("telemetry.db")
    if not await asyncio.to_thread(telemetry_db.exists):
        return ()
    loaded = load_config(plan.gateway_yaml)
    telemetry = await TelemetryStore.open(telemetry_db)
    try:
        counts = []
        for _, device in loaded.devices:
            good = 0
            for name in device.value_names:
                samples = await telemetry.read_samples(device.tag_id(name), 0.0, math.inf)
                good += sum(1 for sample in samples if sample.quality is Quality.GOOD)
            counts.append((device.id, good))
        return tuple(counts)
    finally:
        await telemetry.close()


async def run_demo(config_source: Path, duration: float | None) -> int:
    mosquitto = ensure_mosquitto()
    if mosquitto is None:
        print(
            "demo: the MQTT broker `mosquitto` is not installed and could not be installed here.\n"
            "      Install it (Debian/Ubuntu: `sudo apt-get install mosquitto`) or run ./dev demo.",
            file=sys.stderr,
        )
        return EX_UNAVAILABLE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: list[Child] = []
    started_at = time.time()  # the summary's timeline counts from here
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as tmp:
        workdir = Path(tmp)
        plan = prepare_config(config_source, workdir)
        broker_conf = workdir / "mosquitto.conf"
        broker_conf.write_text(
            f"listener {plan.broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        py = sys.executable
        print(
            f"demo: broker on 127.0.0.1:{plan.broker_port}; plant: Modbus TCP on "
            f"127.0.0.1:{plan.modbus_port}, OPC UA on 127.0.0.1:{plan.opcua_port}, "
            f"CAN adapter at {plan.can_tty}; config copied to {plan.config_dir}",
            flush=True,
        )
        try:
            children.append(await spawn("broker", mosquitto, "-c", str(broker_conf)))
            if not await wait_for_port(plan.broker_port, 10):
                print("demo: mosquitto did not start listening within 10 s", file=sys.stderr)
                return EX_UNAVAILABLE
            # The gateway's topic tree: the plant reads repairs there, the central system works.
            topic_tree = (
                "--prefix", plan.prefix, "--site", plan.site, "--gateway", plan.gateway_id,
            )  # fmt: skip
            children.append(
                await spawn(
                    "plant",
                    py,
                    "-m",
                    "simulator",
                    "plant",
                    "--modbus-port",
                    str(plan.modbus_port),
                    "--opcua-port",
                    str(plan.opcua_port),
                    "--can-tty",
                    str(plan.can_tty),
                    # The technician's repair reaches the pump: the plant reads the ticket's
                    # `repaired` transition from the broker and replaces the bearing.
                    "--repairs-port",
                    str(plan.broker_port),
                    *topic_tree,
                )
            )
            children.append(
                await spawn(
                    "central",
                    py,
                    "-m",
                    "simulator",
                    "central",
                    "--port",
                    str(plan.broker_port),
                    *topic_tree,
                    "--work",
                    "--pause",
                    str(PERSON_PAUSE_S),
                )
            )
            # The plant is powered up before the gateway, as on a real site; a device that is
            # still down when the gateway starts would only show as comm.lost.
            if not await wait_for_plant(plan, 20):
                print("demo: the plant simulator did not come up within 20 s", file=sys.stderr)
                return EX_UNAVAILABLE
            children.append(
                await spawn("gateway", py, "-m", "gateway", "run", str(plan.gateway_yaml))
            )
            print(
                f"demo: site page on http://127.0.0.1:{plan.site_page_port}/ (open it in a"
                " browser: devices, tickets, and the spectra behind the bearing ticket)",
                flush=True,
            )
            print("demo: running; press Ctrl-C to stop", flush=True)
            waiter = asyncio.create_task(stop.wait(), name="demo-stop")
            exits = [
                asyncio.create_task(c.proc.wait(), name=f"demo-wait[{c.label}]") for c in children
            ]
            _, pending = await asyncio.wait(
                [waiter, *exits], timeout=duration, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for child in children:
                if child.proc.returncode is not None:
                    print(
                        f"demo: `{child.label}` exited early with status {child.proc.returncode}",
                        flush=True,
                    )
        finally:
            for child in reversed(children):
                await child.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        summary = await read_summary(plan, started_at)
    print("\n".join(summary.lines()), flush=True)
    return 0 if summary.scenario_signed_off else 1


def run(args: argparse.Namespace) -> int:
    source = Path(args.config) if args.config else example_site(DEMO_SITE).path
    if source.is_file():
        source = source.parent
    return asyncio.run(run_demo(source, args.duration))
