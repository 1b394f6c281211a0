"""`edge-gateway check-config PATH`: the same loading the daemon does, nothing started.

Problems go to stderr, one per line as `FILE:LINE: dotted.path: message`, and the exit status is
78 (EX_CONFIG, sysexits.h), which systemd's unit treats as "do not restart". A good config prints
one summary line to stdout and exits 0, so scripts can tell the two apart by stream and status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from gateway.config.loader import load_config
from gateway.core.errors import ConfigError
from gateway.core.exit_codes import EX_CONFIG, EX_OK

if TYPE_CHECKING:
    from _typeshed import SupportsWrite


def check_config(path: str, out: TextIO, err: SupportsWrite[str]) -> int:
    """Validate `path` (gateway.yaml or its folder); print the verdict; return the exit status."""
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return EX_CONFIG
    print(f"OK: {loaded.summary} in {loaded.gateway_display}", file=out)
    return EX_OK
