"""`edge-gateway`: run | check-config | schema | contract | example | analyze | tickets | ...

Exit codes follow sysexits where they exist: 0 ok, 64 usage, 65 bad data, 66 missing input,
69 a needed service is unavailable, 78 configuration error (systemd's unit does not restart on
78), 141 when the reader of the output went away (`status | head`), as for SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from gateway import __version__
from gateway.core.exit_codes import EX_BROKEN_PIPE, EX_OK, EX_USAGE
from gateway.runtime.logs import configure_logging, error_stream


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway import app

    return app.main(args.config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config.check import check_config

    return check_config(args.path, sys.stdout, error_stream(), site=args.site)


def _cmd_schema(args: argparse.Namespace) -> int:
    from gateway.config import schema

    if args.gateway:
        document = schema.gateway_schema()
    elif args.device:
        document = schema.device_schema()
    else:
        document = schema.json_schema()
    sys.stdout.write(schema.render(document))
    return EX_OK


def _cmd_contract(args: argparse.Namespace) -> int:
    from gateway.cli import contract

    return contract.run(args)


def _cmd_example(args: argparse.Namespace) -> int:
    from gateway.cli import example

    return example.run(args)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from gateway.cli import analyze

    return analyze.run(args)


def _cmd_tickets(args: argparse.Namespace) -> int:
    from gateway.cli import tickets

    return tickets.run(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from gateway.cli import status

    return status.run(args)


def _cmd_values(args: argparse.Namespace) -> int:
    from gateway.cli import values

    return values.run(args)


def _cmd_probe(args: argparse.Namespace) -> int:
    from gateway.cli import probe

    return probe.run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.cli import demo

    return demo.run(args)


def _run_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The top level and the `run` command: all the daemon needs to start. The other
    commands' parsers import what they describe (the vibration tools bring numpy and scipy,
    `discover` every protocol's library: about 25 MB of RSS a daemon polling Modbus never
    uses), so `run` alone does not build them."""
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="Factory edge gateway: polls devices, detects faults, opens tickets.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway daemon")
    run.add_argument("config", help="gateway.yaml or the folder holding it")
    run.set_defaults(func=_cmd_run)
    return parser, sub


def _runs_the_daemon(argv: Sequence[str]) -> bool:
    """`[-v] run CONFIG`: the command is `run` (options before it are the global ones)."""
    commands = [a for a in argv if not a.startswith("-")]
    return bool(commands) and commands[0] == "run" and "-h" not in argv and "--help" not in argv


def build_parser() -> argparse.ArgumentParser:
    parser, sub = _run_parser()

    check = sub.add_parser("check-config", help="validate a configuration; exit 78 if invalid")
    check.add_argument("path", help="gateway.yaml or the folder holding it, or one device file")
    check.add_argument(
        "--site",
        help="check a device file with this site (gateway.yaml or its folder); default: the"
        " nearest gateway.yaml above the device file",
    )
    check.set_defaults(func=_cmd_check_config)

    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of the configuration (both files, or one with a flag)",
    )
    which = schema.add_mutually_exclusive_group()
    which.add_argument("--gateway", action="store_true", help="the schema of gateway.yaml only")
    which.add_argument("--device", action="store_true", help="the schema of devices/*.yaml only")
    schema.set_defaults(func=_cmd_schema)

    contract_parser = sub.add_parser(
        "contract",
        help="print the MQTT contract: the AsyncAPI 3.0 document with the JSON Schema of every"
        " message, command and reply",
    )
    contract_parser.set_defaults(func=_cmd_contract)

    from gateway.cli import example

    example_parser = sub.add_parser(
        "example", help="list the example sites shipped with the gateway, or copy one to start"
    )
    example.add_arguments(example_parser)
    example_parser.set_defaults(func=_cmd_example)

    from gateway.cli import analyze

    analyze_parser = sub.add_parser(
        "analyze", help="diagnose a vibration recording offline (.mat, .npy, .csv, IMS ASCII)"
    )
    analyze.add_arguments(analyze_parser)
    analyze_parser.set_defaults(func=_cmd_analyze)

    tickets = sub.add_parser("tickets", help="list the tickets known to this gateway")
    where = tickets.add_mutually_exclusive_group()
    where.add_argument("--config", help="gateway.yaml or its folder (finds state.db from it)")
    where.add_argument("--db", help="path of state.db")
    tickets.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    tickets.set_defaults(func=_cmd_tickets)

    from gateway.cli import status

    status_parser = sub.add_parser(
        "status", help="health, outbox and data residency of the running daemon"
    )
    status.add_arguments(status_parser)
    status_parser.set_defaults(func=_cmd_status)

    from gateway.cli import probe

    probe_parser = sub.add_parser(
        "probe", help="read one device once (or for a while) and print every point; read-only"
    )
    probe.add_arguments(probe_parser)
    probe_parser.set_defaults(func=_cmd_probe)

    from gateway.cli import discover
    from protocols import PROTOCOLS

    discover.add_commands(sub, PROTOCOLS)

    from gateway.cli import values

    values_parser = sub.add_parser(
        "values", help="raw samples from telemetry.db, decoded, as a table or CSV"
    )
    values.add_arguments(values_parser)
    values_parser.set_defaults(func=_cmd_values)

    demo = sub.add_parser(
        "demo",
        help="run the demo plant: local broker, simulator, central ticket system and the gateway",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds, print a summary, exit 0 only if the scenario "
        "ticket was closed by the requester's sign-off (the loop takes about a minute)",
    )
    demo.add_argument("--config", default=None, help="site to use (default: the shipped demo site)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    parser = _run_parser()[0] if _runs_the_daemon(given) else build_parser()
    args = parser.parse_args(argv)
    # The command as typed, for what it writes (a draft's header names its command).
    args.command_line = shlex.join(["edge-gateway", *(sys.argv[1:] if argv is None else argv)])
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    configure_logging(args.verbose)
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
    except BrokenPipeError:
        # `edge-gateway status | head`: what was not read is not wanted. Point stdout at
        # /dev/null so that the interpreter's last flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_BROKEN_PIPE
    return result


if __name__ == "__main__":
    sys.exit(main())
