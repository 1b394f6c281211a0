"""`python -m simulator plant|central`: the demo's plant and its central ticket system."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.central import WorkPlan


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    plant = sub.add_parser("plant", help="serve the demo plant's devices")
    plant.add_argument("--host", default="127.0.0.1")
    plant.add_argument("--modbus-port", type=int, default=5020)
    plant.add_argument("--opcua-port", type=int, default=4840)
    plant.add_argument(
        "--can-tty",
        default=None,
        metavar="PATH",
        help="serve the motor's CAN bus through a simulated slcan adapter at this pty path",
    )
    plant.add_argument(
        "--bearing-fault-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="when the pump's drive-end bearing develops an outer-race defect and runs hot "
        "(default 22)",
    )
    plant.add_argument(
        "--repairs-port",
        type=int,
        default=None,
        metavar="PORT",
        help="read the gateway's ticket transitions from the broker on this port: a repair "
        "reported for the pump replaces its bearing (needs --site and --gateway)",
    )
    plant.add_argument("--repairs-host", default="127.0.0.1")
    plant.add_argument("--prefix", default="factory", help="the gateway's topic prefix")
    plant.add_argument("--site", default=None, help="the gateway's site id")
    plant.add_argument("--gateway", default=None, help="the gateway id")
    plant.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run the machine script this many times faster than real time",
    )
    central = sub.add_parser("central", help="the simulated central ticket system (CMMS)")
    central.add_argument("--host", default="127.0.0.1")
    central.add_argument("--port", type=int, default=1883)
    central.add_argument("--prefix", default="factory")
    central.add_argument("--site", required=True)
    central.add_argument("--gateway", required=True)
    central.add_argument("--no-ack", action="store_true", help="receive tickets but never ack")
    central.add_argument(
        "--work",
        action="store_true",
        help="play the people: a technician accepts, starts and closes each ticket with coded "
        "cause and remedy; a requester signs off verified repairs",
    )
    central.add_argument(
        "--pause",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a person takes before each step of --work (default 0.5)",
    )
    return parser


async def _until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


async def _plant(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from simulator.plant import BEARING_FAULT_AFTER_S, run_plant
    from simulator.repairs import RepairFeed
    from uplink.topics import Topics

    repairs = None
    if args.repairs_port is not None:
        topics = Topics(args.prefix, args.site, args.gateway)
        repairs = RepairFeed(args.repairs_host, args.repairs_port, topics)
    fault_after = args.bearing_fault_after
    await run_plant(
        args.host,
        args.modbus_port,
        args.opcua_port,
        can_tty=args.can_tty,
        time_scale=args.time_scale,
        bearing_fault_after_s=BEARING_FAULT_AFTER_S if fault_after is None else fault_after,
        repairs=repairs,
        stop_event=stop,
    )


async def _central(args: argparse.Namespace, stop: asyncio.Event) -> None:
    from simulator.central import CentralSystem

    central = CentralSystem(
        args.host,
        args.port,
        args.prefix,
        args.site,
        args.gateway,
        ack=not args.no_ack,
        work=_work_plan(args),
    )
    task = asyncio.create_task(central.run_central(), name="central")
    await stop.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _work_plan(args: argparse.Namespace) -> WorkPlan | None:
    from simulator.central import WorkPlan

    if not args.work:
        return None
    return WorkPlan() if args.pause is None else WorkPlan(pause_s=args.pause)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    repairs = args.command == "plant" and args.repairs_port is not None
    if repairs and not (args.site and args.gateway):
        parser.error("--repairs-port needs --site and --gateway")
    logging.basicConfig(level=logging.INFO, format="%(levelname)-7s %(name)s: %(message)s")
    for noisy in ("asyncua", "pymodbus"):  # they narrate every request at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "plant":
        asyncio.run(_until_signalled(lambda stop: _plant(args, stop)))
    else:
        asyncio.run(_until_signalled(lambda stop: _central(args, stop)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
