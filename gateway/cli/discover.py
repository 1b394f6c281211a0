"""The discovery commands protocols add to `edge-gateway` (`browse`, `import-dbc`,
`scan modbus`): registered from the protocol table, so the CLI names no protocol.

Each drafts a device file that the loader accepts as it is: to standard output, or to
`--output FILE` (never over an existing file without `--force`). Notes about what was found go
to stderr with the next steps. Exit 0 with a draft, 64 for options that make no sense, 65 for
an input file that cannot be read as what it should be, 66 for a missing input file, 69 when
the device cannot be reached, 73 when the output cannot be written.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError, DriverError
from gateway.core.exit_codes import (
    EX_CANTCREAT,
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
)
from gateway.core.plugins import DiscoveryCommand, Option, PluginTable, discovery_commands

SHARED_HELP = {"scan": "find which addresses of a device answer and draft its device file"}


def add_commands(sub: Any, protocols: PluginTable[Any]) -> None:
    """Add every discovery command of the table's protocols to the `edge-gateway` parser."""
    groups: dict[str, Any] = {}
    for command in discovery_commands(protocols):
        if command.target is None:
            parser = sub.add_parser(command.name, help=command.help, description=command.help)
        else:
            if command.name not in groups:
                group = sub.add_parser(
                    command.name, help=SHARED_HELP.get(command.name, command.help)
                )
                groups[command.name] = group.add_subparsers(
                    dest="target", metavar="KIND", required=True
                )
            parser = groups[command.name].add_parser(
                command.target, help=command.help, description=command.help
            )
        for option in command.options:
            _add_option(parser, option)
        parser.add_argument("-o", "--output", metavar="FILE", help="write the draft to FILE")
        parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
        parser.set_defaults(func=functools.partial(run, command))


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    extra: dict[str, Any] = {"help": option.help, "type": option.type}
    if option.metavar is not None:
        extra["metavar"] = option.metavar
    if option.choices is not None:
        extra["choices"] = option.choices
    if option.flags[0].startswith("-"):
        extra["default"] = [] if option.multiple else option.default
        if option.multiple:
            extra["action"] = "append"
    parser.add_argument(*option.flags, **extra)


def dest(option: Option) -> str:
    return option.flags[-1].lstrip("-").replace("-", "_")


def run(command: DiscoveryCommand, args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # drivers narrate connects at INFO
    options = {dest(option): getattr(args, dest(option)) for option in command.options}
    options["command_line"] = getattr(args, "command_line", None)
    output = Path(args.output) if args.output else None
    if output is not None:
        if output.exists() and not args.force:
            print(f"{output} exists; give --force to overwrite it", file=sys.stderr)
            return EX_CANTCREAT
        if not output.parent.is_dir():
            print(f"folder {output.parent} does not exist", file=sys.stderr)
            return EX_CANTCREAT
    try:
        draft = asyncio.run(command.draft(options, output.parent if output else None))
    except ValueError as exc:
        print(f"{command.name}: {exc}", file=sys.stderr)
        return EX_USAGE
    except FileNotFoundError as exc:
        print(f"{command.name}: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EX_DATAERR
    except DriverError as exc:
        print(f"{command.name}: the device cannot be reached: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    if output is None:
        sys.stdout.write(draft.text)
        sys.stdout.flush()
    else:
        try:
            output.write_text(draft.text, encoding="utf-8")
        except OSError as exc:
            print(f"cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
            return EX_CANTCREAT
    for note in draft.notes:
        print(f"note: {note}", file=sys.stderr)
    shown = str(output) if output is not None else "the draft"
    print(
        f"Drafted device `{draft.device_id}`. Next: review {shown}, then "
        f"`edge-gateway check-config {output or 'FILE'}` and "
        f"`edge-gateway probe {output or 'FILE'}`.",
        file=sys.stderr,
    )
    return EX_OK
