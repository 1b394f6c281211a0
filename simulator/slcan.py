"""The adapter's side of an slcan serial line: what a USB-CAN adapter (CANable, Lawicel CANUSB)
shows its host, as a python-can bus the simulated machines send on.

Why: the gateway must read CAN from another process with the code path a plant uses
with a real adapter, python-can's `slcan` interface. This class plays the adapter on one end of
a serial line (in the demo and tests, a pty pair from `simulator.ptypair`); the gateway opens
the other end with `interface: slcan`.

The protocol (Lawicel ASCII, one command per line ended by CR): the host sends `S0`..`S8`
(bit rate), `O` / `L` (open, listen-only), `C` (close), `V` / `N` (version, serial number), `F`
(status flags) and `t`/`T`/`r`/`R` lines to transmit; the adapter answers CR for OK, BELL for an
error, `Vhhss` / `Nxxxx` / `Fxx` to the queries and `z` / `Z` to a transmit, and sends each
bus frame up as a `t`/`T`/`r`/`R` line. As on a real adapter, bus frames reach the host only
while the channel is open: before the host's `O` and after its `C` they are dropped (counted),
so a gateway that (re)connects never reads a backlog of old frames. Timestamps (`Z1`) and
CAN FD are not offered; slcan has no way to carry an error frame, so sending one raises.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import string
import termios
import threading
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can

log = logging.getLogger(__name__)

_OK = b"\r"
_ERROR = b"\a"
# `S<n>` codes as python-can and the Lawicel manual number them (S9 is python-can's 83.3k).
BITRATE_CODES = {
    "0": 10_000,
    "1": 20_000,
    "2": 50_000,
    "3": 100_000,
    "4": 125_000,
    "5": 250_000,
    "6": 500_000,
    "7": 750_000,
    "8": 1_000_000,
    "9": 83_300,
}
_MAX_LINE = 64  # longer than any slcan line (T + 8 + 1 + 16 = 26): garbage, not a command
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True, slots=True)
class SlcanAdapterStatistics:
    frames_to_host: int  # bus frames written up the line
    frames_dropped_closed: int  # bus frames dropped because the host had not opened the channel
    overruns: int  # bus frames dropped because the host did not read the line
    frames_from_host: int  # frames the host asked to transmit
    commands: int  # command lines from the host, frames included
    rejected: int  # commands answered with BELL (unknown, malformed, wrong state)
    host_opens: int  # `O`/`L` commands accepted


def encode_frame(message: can.Message) -> bytes:
    """The line an adapter sends up for `message`: `t1008AABB...\\r` and its kin."""
    if message.is_error_frame:
        raise can.CanOperationError("slcan cannot carry error frames")
    if message.is_fd:
        raise can.CanOperationError("this adapter does not do CAN FD")
    if message.dlc > 8:
        raise can.CanOperationError(f"classic CAN carries at most 8 bytes, not {message.dlc}")
    width = 8 if message.is_extended_id else 3
    ident = f"{message.arbitration_id:0{width}X}"
    if message.is_remote_frame:
        kind = "R" if message.is_extended_id else "r"
        return f"{kind}{ident}{message.dlc:d}".encode() + _OK
    kind = "T" if message.is_extended_id else "t"
    payload = bytes(message.data)[: message.dlc].hex().upper()
    return f"{kind}{ident}{message.dlc:d}{payload}".encode() + _OK


def parse_frame(line: str) -> can.Message | None:
    """A host's transmit command (`t`, `T`, `r`, `R` line without CR), or None if malformed."""
    if not line or line[0] not in "tTrR":
        return None
    extended = line[0] in "TR"
    remote = line[0] in "rR"
    id_len = 8 if extended else 3
    head, rest = line[1 : 1 + id_len], line[1 + id_len :]
    if len(head) != id_len or not _HEX.issuperset(head) or not rest[:1].isdigit():
        return None
    ident, dlc = int(head, 16), int(rest[0])
    payload = rest[1:]
    if ident > (0x1FFFFFFF if extended else 0x7FF) or dlc > 8:
        return None
    if remote:
        data = b""
        if payload:
            return None
    else:
        if len(payload) != 2 * dlc or not _HEX.issuperset(payload):
            return None
        data = bytes.fromhex(payload)
    return can.Message(
        arbitration_id=ident,
        is_extended_id=extended,
        is_remote_frame=remote,
        dlc=dlc,
        data=data,
    )


class SlcanAdapter(can.BusABC):
    """Serves the adapter's end of the serial line at `tty` (a path such as a pty link).

    `send()` puts a bus frame on the line (dropped while the host has the channel closed);
    `recv()` returns frames the host asked to transmit. A thread answers the host's commands.
    Not picklable, not for python-can's `can.Bus(...)` factory: construct it directly.
    """

    def __init__(
        self,
        tty_path: str | Path,
        *,
        version: str = "1013",
        serial_number: str = "SIM1",
        **kwargs: Any,
    ) -> None:
        if len(version) != 4 or not version.isdigit():
            raise ValueError("version is hhss: two digits hardware, two digits software")
        self._version = version
        self._serial_number = serial_number
        try:
            self._fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as error:
            raise can.CanInitializationError(f"cannot open `{tty_path}`: {error}") from error
        try:
            # socat already made the pty raw; a real tty might not be.
            tty.setraw(self._fd, termios.TCSANOW)
        except termios.error as error:
            os.close(self._fd)
            raise can.CanInitializationError(f"`{tty_path}` is not a tty: {error}") from error
        self._wake_read, self._wake_write = os.pipe()
        self._write_lock = threading.Lock()
        self._pending = b""  # the rest of a line the tty took only in part
        self._open = False
        self._listen_only = False
        self._closed = False
        self.bitrate: int | None = None  # as the host set it with `S<n>`
        self._from_host: queue.SimpleQueue[can.Message] = queue.SimpleQueue()
        self._counts = dict.fromkeys(SlcanAdapterStatistics.__slots__, 0)
        self.channel_info = str(tty_path)
        super().__init__(channel=str(tty_path), **kwargs)
        self._thread = threading.Thread(
            target=self._serve_host, name=f"slcan-adapter[{tty_path}]", daemon=True
        )
        self._thread.start()

    # --- state --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True between the host's `O` (or `L`) and its `C`."""
        return self._open

    def statistics(self) -> SlcanAdapterStatistics:
        return SlcanAdapterStatistics(**self._counts)

    # --- python-can bus -----------------------------------------------------------------------

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Put `msg` on the line to the host; dropped (and counted) while the channel is closed."""
        line = encode_frame(msg)
        if not self._open:
            self._counts["frames_dropped_closed"] += 1
            return
        if self._emit(line):
            self._counts["frames_to_host"] += 1
        else:
            self._counts["overruns"] += 1

    def write_line(self, line: bytes) -> None:
        """Any bytes plus CR on the line, whatever the channel state: to test how a host copes
        with garbage (line noise, a confused adapter)."""
        if not self._emit(line + _OK):
            self._counts["overruns"] += 1

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        try:
            return self._from_host.get(timeout=timeout), False
        except queue.Empty:
            return None, False

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        super().shutdown()
        os.write(self._wake_write, b"x")
        self._thread.join(timeout=2.0)
        for fd in (self._fd, self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- the line -----------------------------------------------------------------------------

    def _emit(self, data: bytes) -> bool:
        """Write whole lines or nothing: False when the host is not reading (tty buffer full)."""
        with self._write_lock:
            try:
                if self._pending:
                    self._pending = self._pending[os.write(self._fd, self._pending) :]
                    if self._pending:
                        return False
                written = os.write(self._fd, data)
            except BlockingIOError:
                return False
            except OSError as error:
                # EIO: the other end is gone (socat stopped). python-can's contract for send.
                raise can.CanOperationError(f"serial line failed: {error}") from error
            self._pending = data[written:]
            return True

    def _serve_host(self) -> None:
        buffer = bytearray()
        while True:
            ready, _, _ = select.select([self._fd, self._wake_read], [], [])
            if self._wake_read in ready:
                return
            try:
                chunk = os.read(self._fd, 4096)
            except BlockingIOError:
                continue
            except OSError as error:
                if error.errno == errno.EIO:  # the line is gone: socat stopped
                    log.info("slcan adapter on `%s`: the serial line closed.", self.channel_info)
                    return
                raise
            if not chunk:
                return
            buffer.extend(chunk)
            for line in _split_lines(buffer):
                reply = self._answer(line)
                if reply:
                    try:
                        self._emit(reply)
                    except can.CanOperationError:
                        return

    def _answer(self, raw: bytes) -> bytes:
        """The adapter's reply to one command line (without its CR)."""
        line = raw.decode("ascii", errors="replace").lstrip("\n")
        if not line:
            return b""  # python-can sends a bare CR for "no CAN FD data rate"; nothing to do
        self._counts["commands"] += 1
        reply = self._command(line[0], line[1:], line)
        if reply == _ERROR:
            self._counts["rejected"] += 1
            log.debug("slcan adapter rejected `%s`.", line)
        return reply

    def _command(self, head: str, arg: str, line: str) -> bytes:
        closed = not self._open
        if head in "OL" and not arg:
            if self._open:
                return _ERROR  # Lawicel: open while open is an error
            self._open, self._listen_only = True, head == "L"
            self._counts["host_opens"] += 1
            log.info("slcan adapter on `%s`: host opened the channel.", self.channel_info)
            return _OK
        if head == "C" and not arg:
            if self._open:
                log.info("slcan adapter on `%s`: host closed the channel.", self.channel_info)
            self._open = False  # closing a closed channel is harmless (python-can does it)
            return _OK
        if head == "S" and arg in BITRATE_CODES and closed:
            self.bitrate = BITRATE_CODES[arg]
            return _OK
        if head == "s" and len(arg) == 4 and _HEX.issuperset(arg) and closed:
            self.bitrate = None  # BTR register values: a custom rate we do not model
            return _OK
        if head == "Y" and arg in ("2", "5") and closed:
            return _OK  # CANable 2 CAN FD data rate: accepted, FD frames are never sent
        if head in "Mm" and len(arg) == 8 and _HEX.issuperset(arg) and closed:
            return _OK  # acceptance code/mask: every frame goes up, the host filters
        if head == "Z" and arg == "0":
            return _OK
        if head == "V" and not arg:
            return f"V{self._version}".encode() + _OK
        if head == "N" and not arg:
            return f"N{self._serial_number}".encode() + _OK
        if head == "F" and not arg:
            return b"F00" + _OK  # no error flags
        if head in "tTrR":
            frame = parse_frame(line)
            if frame is None or closed or self._listen_only:
                return _ERROR
            self._counts["frames_from_host"] += 1
            self._from_host.put(frame)
            return (b"Z" if frame.is_extended_id else b"z") + _OK
        return _ERROR


def _split_lines(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete lines (CR-ended) from `buffer`; drop runaway garbage."""
    lines: list[bytes] = []
    while (end := buffer.find(b"\r")) >= 0:
        lines.append(bytes(buffer[:end]))
        del buffer[: end + 1]
    if len(buffer) > _MAX_LINE:
        lines.append(bytes(buffer))  # answered with BELL like any malformed command
        buffer.clear()
    return lines
