"""`edge-gateway contract`: the MQTT contract as an AsyncAPI 3.0 document.

Without options it prints the document shipped in the package (`uplink/asyncapi.json`). In a
checkout, `python -m gateway.cli.contract --write` regenerates every generated contract file
from the code's tables (the message types of `uplink.messages`, the verbs of
`gateway.ticketing.commands.VERBS` and the event kinds of `gateway.ticketing.contract`):
`uplink/asyncapi.json`, `docs/asyncapi.json` and `gateway/ticketing/commands.schema.json`.
Tests fail while any of them is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.ticketing import contract as ticketing_contract
from gateway.ticketing.commands import command_schemas
from uplink import asyncapi

PACKAGE_FILE = Path(asyncapi.__file__).with_name(asyncapi.SHIPPED_FILE)
# Only in a checkout: the copy beside the prose of docs/TICKETS.md.
DOCS_FILE = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def document() -> dict[str, Any]:
    """The AsyncAPI document as the code defines it now."""
    return asyncapi.build_document(command_schemas(), ticketing_contract.event_kinds())


def generated_files() -> dict[Path, str]:
    """Every generated contract file and the text it must have."""
    text = asyncapi.render(document())
    files = {PACKAGE_FILE: text, ticketing_contract.SCHEMA_FILE: ticketing_contract.render_schema()}
    if DOCS_FILE.parent.is_dir():
        files[DOCS_FILE] = text
    return files


def write() -> list[Path]:
    written = []
    for path, text in generated_files().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    if getattr(args, "write", False):
        for path in write():
            print(f"wrote {path}")
        return 0
    sys.stdout.write(asyncapi.render(asyncapi.shipped_document()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the contract files")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
