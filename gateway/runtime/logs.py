"""Logging set-up: plain lines on a terminal, syslog priorities when stderr is the journal.

systemd connects a service's stderr to journald and says so in `JOURNAL_STREAM`
("<device>:<inode>" of that stream, systemd.exec(5)). journald reads a kernel-style `<N>`
prefix on each line as the entry's syslog priority (`SyslogLevelPrefix=`, on by default);
without it every line is *info* and `journalctl -p warning` shows nothing. The variable is
inherited by child processes whose stderr may be something else, so it counts only when it
names the stream we write to.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

JOURNAL_STREAM_ENV = "JOURNAL_STREAM"

# Python level -> syslog priority (RFC 5424: 2 critical, 3 error, 4 warning, 6 info, 7 debug).
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_DEBUG_PRIORITY = 7
ERROR_PRIORITY = 3


def syslog_priority(levelno: int) -> int:
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return _DEBUG_PRIORITY


class JournalFormatter(logging.Formatter):
    """Every line of a record gets the record's priority: a traceback's lines too, since
    journald takes each line as an entry of its own."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def stream_is_journal(environ: Mapping[str, str], stream: TextIO) -> bool:
    """True when `JOURNAL_STREAM` names the device and inode of `stream`."""
    device, _, inode = environ.get(JOURNAL_STREAM_ENV, "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):  # closed, or not a real file (a test's StringIO)
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class PriorityLines(io.TextIOBase):
    """A text stream that starts every line with a syslog priority: for the problems that
    `check-config` prints (not logs) when systemd runs it as ExecStartPre= or ExecReload=, so
    that `journalctl -p err` shows why a start or reload failed."""

    def __init__(self, stream: TextIO, priority: int) -> None:
        self._stream = stream
        self._prefix = f"<{priority}>"
        self._at_line_start = True

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pieces = []
        for line in text.splitlines(keepends=True):
            pieces.append(self._prefix + line if self._at_line_start else line)
            self._at_line_start = line.endswith("\n")
        self._stream.write("".join(pieces))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def error_stream(
    environ: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> TextIO | PriorityLines:
    """stderr for printed errors: with the error priority on each line when it is the journal."""
    env = os.environ if environ is None else environ
    out = sys.stderr if stream is None else stream
    return PriorityLines(out, ERROR_PRIORITY) if stream_is_journal(env, out) else out


def configure_logging(
    verbose: bool, environ: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> None:
    env = os.environ if environ is None else environ
    out = sys.stderr if stream is None else stream
    formatter: logging.Formatter
    if stream_is_journal(env, out):
        # journald adds its own timestamps.
        formatter = JournalFormatter("%(levelname)s %(name)s: %(message)s")
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    # pymodbus logs every refused retry; our source task logs once per state change instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # asyncua narrates every connect at INFO; keep its warnings and errors only.
    logging.getLogger("asyncua").setLevel(logging.WARNING)
