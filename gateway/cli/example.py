"""`edge-gateway example [NAME] [--copy DIR]`: the example sites shipped with the gateway.

Without NAME, lists every example with its folder; with NAME, prints that folder (for
`edge-gateway check-config "$(edge-gateway example demo)"`); with `--copy DIR`, copies the site
(gateway.yaml, knowledge.yaml, devices/ and the JSON Schema files) into DIR to start a site
from, never overwriting a file. Exit 0; 64 for `--copy` without NAME; 66 (EX_NOINPUT) for an
unknown NAME; 73 (EX_CANTCREAT) when a file would be overwritten (nothing is copied then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.config.examples import copy_site, example_site, example_sites
from gateway.core.exit_codes import EX_CANTCREAT, EX_NOINPUT, EX_OK, EX_USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="an example site (`demo`, `modbus-rtu`, ...)")
    parser.add_argument(
        "--copy", metavar="DIR", type=Path, help="copy the site into DIR (overwrites nothing)"
    )


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        if args.copy is not None:
            print("edge-gateway example: --copy needs a site NAME", file=sys.stderr)
            return EX_USAGE
        for site in example_sites():
            print(f"{site.name:<14} {site.path}")
            if site.summary:
                print(f"{'':<14} {site.summary}")
        return EX_OK
    try:
        site = example_site(args.name)
    except KeyError as exc:
        print(f"edge-gateway example: {exc.args[0]}", file=sys.stderr)
        return EX_NOINPUT
    if args.copy is None:
        print(site.path)
        return EX_OK
    try:
        written = copy_site(site, args.copy)
    except FileExistsError as exc:
        print(f"edge-gateway example: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    print(f"Copied the `{site.name}` site to `{args.copy}` ({len(written)} files).")
    print(f"Check it with: edge-gateway check-config {args.copy}")
    return EX_OK
