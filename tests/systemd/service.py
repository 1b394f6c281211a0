"""The daemon as systemd runs it: a subprocess with NOTIFY_SOCKET bound by the test,
STATE_DIRECTORY and JOURNAL_STREAM set as the service manager sets them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.support.broker import free_loopback_port

WAIT_S = 30.0
STEP_S = 0.05


def write_site(folder: Path, *, poll_period_s: float = 0.5) -> Path:
    """A site whose one Modbus device and broker are free ports nobody listens on: the daemon
    starts, reports READY, retries both, and needs nothing else."""
    (folder / "devices").mkdir(parents=True, exist_ok=True)
    gateway_yaml = folder / "gateway.yaml"
    gateway_yaml.write_text(
        "site: plant-t\ngateway_id: edge-t\n"
        f"uplink: {{host: 127.0.0.1, port: {free_loopback_port()}}}\n",
        encoding="utf-8",
    )
    (folder / "devices" / "pump-9.yaml").write_text(
        "id: pump-9\n"
        f"connection: {{protocol: modbus_tcp, host: 127.0.0.1, port: {free_loopback_port()},"
        " timeout_s: 0.2}\n"
        f"poll_period_s: {poll_period_s}\n"
        "points:\n  - {name: temp, address: 0}\n",
        encoding="utf-8",
    )
    return gateway_yaml


class NotifySocket:
    """The service manager's end of sd_notify: a datagram socket the test reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self.received: list[str] = []

    def next(self, within_s: float = WAIT_S) -> str:
        self._sock.settimeout(within_s)
        message = self._sock.recv(4096).decode()
        self.received.append(message)
        return message

    def pending(self) -> list[str]:
        """Datagrams already queued, without waiting."""
        self._sock.setblocking(False)
        found = []
        try:
            while True:
                found.append(self._sock.recv(4096).decode())
        except BlockingIOError:
            pass
        self.received.extend(found)
        return found

    def close(self) -> None:
        self._sock.close()


class Service:
    """`edge-gateway run` in a subprocess; stderr goes to a file (the journal's stand-in)."""

    def __init__(
        self,
        gateway_yaml: Path,
        workdir: Path,
        *,
        env: Mapping[str, str],
        journal: bool = False,
    ) -> None:
        self.stderr_path = workdir / "stderr.log"
        self._stderr = self.stderr_path.open("wb")
        environ = {
            key: value
            for key, value in os.environ.items()
            if key not in ("NOTIFY_SOCKET", "STATE_DIRECTORY", "JOURNAL_STREAM", "WATCHDOG_USEC")
        }
        environ.update(env)
        if journal:
            status = os.fstat(self._stderr.fileno())
            environ["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", str(gateway_yaml)],
            cwd=workdir,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, predicate: Callable[[str], bool], within_s: float = WAIT_S) -> str:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            text = self.log()
            if predicate(text):
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(STEP_S)
        raise AssertionError(f"log line not seen; the daemon wrote:\n{self.log()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, within_s: float = WAIT_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(within_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._stderr.close()
