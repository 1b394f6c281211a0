"""Two pseudo-terminals joined back to back by socat: a serial line between two local processes.

Why: the demo runs the plant and the gateway as separate processes, python-can's
`virtual` bus only works inside one process, and this machine has no `vcan` module. A USB-CAN
adapter speaking slcan is a serial line, so a pty pair stands in for its USB cable: the plant
serves the adapter's side on one end, the gateway opens the other with python-can's `slcan`
interface exactly as it would open `/dev/ttyACM0`. Nothing leaves the machine.

    async with pty_pair(Path("/run/demo/can-plant"), Path("/run/demo/can-gateway")) as pair:
        ...  # open pair.plant_end here, point the gateway's `channel` at pair.gateway_end

Teardown stops socat (SIGTERM, then SIGKILL after `stop_timeout_s`) and removes both links,
also when the body raises or is cancelled. Where `setpriv` exists socat also gets a parent-death
signal, so a plant killed with SIGKILL does not leave it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_READY_LINE = b"starting data transfer loop"
# socat reads its address arguments as `type,option,option`; these characters would split a path.
_SOCAT_SPECIAL = frozenset(",:!;{}[]'\"\\ ")


class PtyPairError(RuntimeError):
    """socat is missing, refused the links, or did not come up in time."""


@dataclass(frozen=True, slots=True)
class PtyPair:
    """Both ends, as symlinks to their `/dev/pts/N`: what one end writes, the other reads."""

    plant_end: Path
    gateway_end: Path
    socat_pid: int


@contextlib.asynccontextmanager
async def pty_pair(
    plant_end: Path,
    gateway_end: Path,
    *,
    ready_timeout_s: float = 5.0,
    stop_timeout_s: float = 2.0,
) -> AsyncIterator[PtyPair]:
    """Run socat joining two new ptys linked at `plant_end` and `gateway_end`; stop it on exit."""
    for path in (plant_end, gateway_end):
        _check_path(path)
    socat = shutil.which("socat")
    if socat is None:
        raise PtyPairError("`socat` is not installed (Debian package `socat`)")
    argv = [socat, "-d", "-d", _pty_address(plant_end), _pty_address(gateway_end)]
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        # SIGTERM to socat when this process dies, even by SIGKILL: no orphan holding the ptys.
        argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        # Its own session: a Ctrl-C meant for the plant must not kill the line before the
        # plant has closed its end; teardown below stops socat in order.
        start_new_session=True,
    )
    try:
        await _wait_ready(process, ready_timeout_s)
        log.info(
            "Serial line up: `%s` <-> `%s` (socat pid %d).", plant_end, gateway_end, process.pid
        )
        yield PtyPair(plant_end, gateway_end, process.pid)
    finally:
        await _stop(process, stop_timeout_s)
        for path in (plant_end, gateway_end):
            # socat removes its links on SIGTERM; after a SIGKILL they would dangle.
            if path.is_symlink():
                path.unlink(missing_ok=True)


def _check_path(path: Path) -> None:
    bad = sorted(_SOCAT_SPECIAL.intersection(str(path)))
    if bad:
        raise ValueError(f"pty link `{path}` contains characters socat cannot take: {bad}")
    if path.exists() and not path.is_symlink():
        # socat replaces a stale symlink, but must never clobber a real file.
        raise PtyPairError(f"`{path}` exists and is not a symlink")


def _pty_address(link: Path) -> str:
    # raw + echo=0: bytes pass untouched in both directions (no CR->LF, no echo of commands).
    return f"pty,raw,echo=0,link={link}"


async def _wait_ready(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Wait for socat's notice that both ptys exist and it is copying bytes."""
    assert process.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                line = await process.stderr.readline()
                if not line:  # socat exited before it was ready
                    await process.wait()
                    raise PtyPairError(
                        f"socat exited with status {process.returncode}: {' | '.join(seen)}"
                    )
                seen.append(line.decode(errors="replace").strip())
                if _READY_LINE in line:
                    return
    except TimeoutError:
        raise PtyPairError(f"socat not ready within {timeout_s:g} s: {' | '.join(seen)}") from None


async def _stop(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL; always reaps the process, even when cancelled meanwhile."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                await process.wait()
        except TimeoutError:
            log.warning("socat (pid %d) ignored SIGTERM; killing it.", process.pid)
        except asyncio.CancelledError:
            # Cancelled while waiting: do not wait politely, but still reap it.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    # After exit the pipe holds socat's last notices; read them so the transport closes.
    if process.stderr is not None:
        rest = await process.stderr.read()
        for line in rest.decode(errors="replace").splitlines():
            if (" E " in line or " W " in line) and "exiting on signal" not in line:
                log.warning("socat: %s", line)
    log.info("Serial line stopped (socat pid %d, status %s).", process.pid, process.returncode)
