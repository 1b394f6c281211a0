"""The outbox near the disk's limit: three figures from one run, on one disk.

1. **bare**: a bare SQLite loop, WAL, `synchronous=FULL`, one small row and one COMMIT (one
   fsync) per iteration: what the disk allows, the reference for the others.
2. **committed**: ticket changes per second through the real ticket service into state.db
   (ticket, event and CloudEvent outbox message of each change, each with its own revision and
   event id). `--tickets` tickets are opened first; then every round hands the service one
   finding per ticket, together (`TicketService.on_findings`, as a batch of records brings
   them): a clear, then a raise again, so each finding is one change (`condition_cleared`,
   then `retriggered`). Also the same changes one at a time (`on_finding`, each awaited).
3. **drained**: ticket messages per second from state.db through a real mosquitto on loopback
   to a consumer that acknowledges every message like the simulated central system
   (`cmd/ack` with `event_id`, `ticket_id`, `central_id`, a response topic and correlation
   data; its acks pipelined), back through the uplink's ack session, the real command table
   (`TicketCommands`, acks handled in batches) and settled in state.db. The first ack of a
   ticket also moves it to ACKNOWLEDGED, a change whose message is drained as well. Counted
   from the uplink's start until the outbox is empty. The per-actor ack rate limit
   (`uplink.acks_per_s`, 500/s by default) is lifted: it would bound this figure, not the
   outbox. The consumer runs in a process of its own, as the central system is a system of its
   own: in the gateway's process it would take the gateway's interpreter lock and a good part
   of its CPU (a quarter to a third in 2026-12-06's measurements). `--in-process-consumer`
   puts it back in, as the figures before that date were taken.

    .venv/bin/python -m bench.outbox --runs 5

Median of `--runs` runs, each with its own state.db; prints one table and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from gateway.core.clock import SystemClock
from gateway.core.records import FaultCode, Finding, Priority
from gateway.store import StateDatabase
from gateway.ticketing import TicketService
from gateway.ticketing.commands import TicketCommands
from tests.support.broker import MosquittoBroker
from tests.ticketing.policies import default_policy
from tests.uplink.helpers import running, uplink_settings
from uplink.admission import RateLimit
from uplink.events import make_ticket_encoder, source_urn
from uplink.mqtt import LinkSettings, MessageProperties, MqttLink, OutgoingMessage
from uplink.service import Uplink
from uplink.topics import Topics

SITE, GATEWAY = "plant-a", "gw-1"
TOPICS = Topics("factory", SITE, GATEWAY)
BROKER_CONFIG = ("max_queued_messages 100000", "max_inflight_messages 0")
UNLIMITED = RateLimit(1e9, 10**9)
THIS_FILE = str(Path(__file__).resolve())


@dataclass(frozen=True, slots=True)
class Run:
    bare_per_s: float
    committed_per_s: float
    transactions: int
    changes: int
    sequential_per_s: float
    drained_per_s: float
    drained: int


def bare_commits(folder: Path, commits: int) -> float:
    conn = sqlite3.connect(folder / "bare.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        row = os.urandom(400)
        started = time.perf_counter()
        for _ in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (payload) VALUES (?)", (row,))
            conn.execute("COMMIT")
        return commits / (time.perf_counter() - started)
    finally:
        conn.close()


def finding(asset: str, ts: float, active: bool) -> Finding:
    value = 92.0 if active else 70.0
    return Finding(
        asset=asset,
        fault_code=FaultCode.THRESHOLD_HIGH,
        severity=Priority.P2,
        score=1.0,
        detector="threshold:bearing",
        message=f"{asset}.bearing_temp is {value} °C.",
        ts=ts,
        active=active,
        value=value,
        signal=f"{asset}.bearing_temp",
        features={"value": value},
    )


async def open_service(path: Path) -> tuple[StateDatabase, TicketService]:
    state = await StateDatabase.open(path)
    encode = make_ticket_encoder(TOPICS, source_urn(SITE, GATEWAY), state.outbox.next_sequence)
    # Floods, storms by signature and chatter off: every finding here is meant to be a ticket
    # change of its own (the pumps share one fault code and asset class, so with the default
    # grouping they would be held for `group_wait_s` and then folded into one incident).
    policy = default_policy(
        flood_threshold=10**9, chatter_cycles=10**9, group_threshold=10**9, group_wait_s=0.0
    )
    service = TicketService(SITE, GATEWAY, state, encode, SystemClock(), policy=policy)
    await service.start()
    return state, service


async def committed_changes(
    path: Path, tickets: int, rounds: int, *, together: bool
) -> tuple[float, int, int]:
    """Changes/s, transactions and changes of the timed rounds."""
    state, service = await open_service(path)
    try:
        assets = [f"pump-{i}" for i in range(tickets)]
        t0 = time.time()
        await service.on_findings([finding(a, t0, True) for a in assets])
        before = state.group_commits.transactions
        changes = 0
        started = time.perf_counter()
        for r in range(1, rounds + 1):
            batch = [finding(a, t0 + r, r % 2 == 0) for a in assets]
            if together:
                await service.on_findings(batch)
            else:
                for one in batch:
                    await service.on_finding(one)
            changes += len(batch)
        elapsed = time.perf_counter() - started
        transactions = state.group_commits.transactions - before
        committed = 0
        for ticket in service.open_tickets():
            committed += len(await state.tickets.ticket_events(ticket.id))
        expected = tickets * (rounds + 1)
        if committed != expected:
            raise RuntimeError(f"{committed} ticket events in state.db, expected {expected}")
        return changes / elapsed, transactions, changes
    finally:
        await state.close()


@contextlib.asynccontextmanager
async def consumer_process(port: int) -> AsyncIterator[None]:
    """`acking_consumer` in a child process (this file run with `--consumer`), connected
    before this returns; ended when the block is left. It finds the modules as this process
    does, so both sides of an A/B run use the same consumer."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    process = await asyncio.create_subprocess_exec(
        sys.executable, THIS_FILE, "--consumer", str(port),
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = await process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the consumer process did not start: {line!r}")
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()


async def run_consumer(port: int) -> None:
    """The child's side of `consumer_process`: ack until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with acking_consumer(port):
        print("ready", flush=True)
        await stop.wait()


@contextlib.asynccontextmanager
async def acking_consumer(port: int) -> AsyncIterator[dict[str, int]]:
    """Subscribes to the ticket topics and acks every message as the central system does,
    without waiting for each PUBACK before the next ack."""
    reply_topic = "factory/central/bench/replies"
    settings = LinkSettings(
        "127.0.0.1", port, "bench-central", subscriptions=(
            f"factory/{SITE}/{GATEWAY}/tickets/#", reply_topic,
        ), reconnect_min_s=0.05, reconnect_max_s=0.5, clean_start=True,
    )  # fmt: skip
    seen = {"messages": 0, "acks": 0, "replies": 0}
    # Command ids unique per run without a uuid4 each (urandom is not free on a busy machine).
    run_id, numbers = uuid.uuid4().hex, itertools.count()
    pending: set[asyncio.Future[int]] = set()

    async def consume(link: MqttLink) -> None:
        while True:
            message = await link.receive()
            if message.topic == reply_topic:
                seen["replies"] += 1
                link.acknowledge(message)
                continue
            seen["messages"] += 1
            document = json.loads(message.payload)
            command_id = f"{run_id}-{next(numbers)}"
            body = {
                "command_id": command_id,
                "actor": "central",
                "event_id": document["id"],
                "ticket_id": document["data"]["id"],
                "central_id": f"WO-{document['data']['id']}",
            }
            ack = OutgoingMessage(
                topic=TOPICS.cmd("ack"),
                payload=json.dumps(body).encode(),
                qos=1,
                properties=MessageProperties(
                    content_type="application/json",
                    response_topic=reply_topic,
                    correlation_data=command_id.encode(),
                ),
            )
            sent = link.send(ack)
            pending.add(sent)
            sent.add_done_callback(pending.discard)
            seen["acks"] += 1
            link.acknowledge(message)

    async with MqttLink(settings) as link:
        async with asyncio.timeout(10):
            await link.wait_connected()
        async with running(consume(link), "bench-central"):
            yield seen


async def drained_messages(
    path: Path, port: int, tickets: int, timeout_s: float, *, in_process: bool = False
) -> tuple[float, int]:
    state, service = await open_service(path)
    try:
        commands = TicketCommands(service, state.outbox, state.commands, SystemClock())
        await service.on_findings([finding(f"pump-{i}", time.time(), True) for i in range(tickets)])
        settings = uplink_settings(
            port, resend_interval_s=30.0, poll_interval_s=0.5, batch_size=200,
            ack_rate=UNLIMITED, ack_queue=100_000, ack_timeout_s=30.0,
        )  # fmt: skip
        uplink = Uplink(
            settings, state.outbox, commands.handle, SystemClock(), on_acks=commands.handle_many
        )
        settled_before = state.outbox.settled
        consumer = acking_consumer(port) if in_process else consumer_process(port)
        async with consumer:
            started = time.perf_counter()
            async with running(uplink.run_uplink(), "uplink"), asyncio.timeout(timeout_s):
                while await state.outbox.depth() > 0:  # noqa: ASYNC110 (polls state.db)
                    await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
        drained = state.outbox.settled - settled_before
        return drained / elapsed, drained
    finally:
        await state.close()


async def one_run(folder: Path, port: int, args: argparse.Namespace) -> Run:
    bare = bare_commits(folder, args.bare_commits)
    together, transactions, changes = await committed_changes(
        folder / "together.db", args.tickets, args.rounds, together=True
    )
    sequential, _, _ = await committed_changes(
        folder / "sequential.db", args.tickets, max(2, args.rounds // 5), together=False
    )
    drained, count = await drained_messages(
        folder / "drain.db", port, args.drain_tickets, 120.0, in_process=args.in_process_consumer
    )
    return Run(bare, together, transactions, changes, sequential, drained, count)


async def measure(args: argparse.Namespace) -> list[Run]:
    runs = []
    for _ in range(args.runs):
        # A broker per run: the uplink's session is persistent (one client id), so a broker
        # kept across runs hands the next run the acks the last one handled but had not yet
        # PUBACKed when it stopped (a few hundred, each refused as unknown: not this run's).
        with (
            MosquittoBroker(extra_config=BROKER_CONFIG) as broker,
            tempfile.TemporaryDirectory(dir=args.dir) as folder,
        ):
            runs.append(await one_run(Path(folder), broker.port, args))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bare-commits", type=int, default=3000)
    parser.add_argument("--tickets", type=int, default=200, help="tickets changed per round")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--drain-tickets", type=int, default=3000)
    parser.add_argument(
        "--dir", default=None, help="folder on the disk to measure (default: TMPDIR)"
    )
    parser.add_argument(
        "--in-process-consumer",
        action="store_true",
        help="run the acking consumer in this process, beside the gateway (as before 2026-12-06)",
    )
    parser.add_argument("--consumer", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.consumer is not None:
        asyncio.run(run_consumer(args.consumer))
        return
    load_before = os.getloadavg()
    runs = asyncio.run(measure(args))
    load_after = os.getloadavg()
    bare = statistics.median(r.bare_per_s for r in runs)
    per_tx = statistics.median(r.changes / max(1, r.transactions) for r in runs)
    rows = [
        ("bare SQLite commits/s (WAL, FULL)", [r.bare_per_s for r in runs]),
        (
            f"ticket changes committed/s, together ({per_tx:.0f} per transaction)",
            [r.committed_per_s for r in runs],
        ),
        ("ticket changes committed/s, one at a time", [r.sequential_per_s for r in runs]),
        ("ticket messages drained/s through the central ack", [r.drained_per_s for r in runs]),
    ]
    # The disk's fsync rate moves from run to run on a shared machine, so each run is also
    # compared with its own bare loop.
    print("| figure | median | runs | ratio of medians | ratio per run (median) |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, values in rows:
        median = statistics.median(values)
        shown = ", ".join(f"{v:.0f}" for v in values)
        per_run = [v / r.bare_per_s for v, r in zip(values, runs, strict=True)]
        print(
            f"| {name} | {median:.0f} | {shown} | {median / bare:.2f}x |"
            f" {statistics.median(per_run):.2f}x ({', '.join(f'{x:.2f}' for x in per_run)}) |"
        )
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
        f" ({os.cpu_count()} CPUs); {runs[0].drained} messages drained per run, the consumer"
        f" {'in this process' if args.in_process_consumer else 'in its own process'}"
    )


if __name__ == "__main__":
    main()
