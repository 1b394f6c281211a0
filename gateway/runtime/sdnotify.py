"""systemd notifications (Type=notify): READY, RELOADING, STOPPING, STATUS and the watchdog.

Speaks the sd_notify datagram protocol directly so no extra library is needed. Without
NOTIFY_SOCKET (not under systemd, or in tests) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An '@' prefix names an abstract socket (leading NUL byte).
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval_s: float | None = int(usec) / 1e6 / 2 if usec.isdigit() else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("Could not notify systemd at `%s`: %s", self._address, exc)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def reloading(self, monotonic_usec: int) -> None:
        """A reload begins; `READY=1` follows when the new configuration runs. systemd
        (since 253) matches the reload by the CLOCK_MONOTONIC time in microseconds."""
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    async def run_watchdog(self) -> None:
        """Heartbeat at half the watchdog interval, while the event loop is healthy.

        Start it only when `watchdog_interval_s` is set (systemd asked for a watchdog).
        """
        interval = self.watchdog_interval_s
        if interval is None:
            raise RuntimeError("no watchdog requested: WATCHDOG_USEC is not set")
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
