"""A real mosquitto broker for tests, on a free loopback port (DESIGN.md section 10).

Never a mock: the uplink and the end-to-end tests talk MQTT 5 to the real thing. The broker can
be stopped, killed, paused and restarted on the same port, which is how the tests produce
outages. Every process started here is reaped; none is left behind.

Use the `mosquitto` fixture (a started broker, stopped at teardown) or `MosquittoBroker`
directly. The process calls are short and blocking (well under a second), acceptable inside
async tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
START_TIMEOUT_S = 10.0


def find_mosquitto() -> str:
    """Path of the mosquitto binary; a clear failure (never a skip) when it is missing."""
    for candidate in MOSQUITTO_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("mosquitto")
    if found:
        return found
    pytest.fail(
        "mosquitto is not installed, and the uplink tests need a real broker. "
        "Run `./dev test`, which installs it (Debian package `mosquitto`).",
        pytrace=False,
    )


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MosquittoBroker:
    """One mosquitto process on 127.0.0.1; `restart()` keeps the port."""

    def __init__(
        self,
        *,
        persistence: bool = False,
        port: int | None = None,
        acl: str | None = None,
        extra_config: tuple[str, ...] = (),
    ) -> None:
        """`acl`: the text of a mosquitto acl_file; its lines apply to anonymous clients
        (for example "topic read #"), so a test can provoke an ACL denial. `extra_config`:
        more lines of mosquitto.conf (queue sizes for a burst, for example)."""
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_loopback_port()
        self.persistence = persistence
        self.acl = acl
        self.extra_config = extra_config
        self._binary = find_mosquitto()
        self._dir = Path(tempfile.mkdtemp(prefix="mosquitto-test-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_file(self) -> Path:
        return self._dir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to user `mosquitto`, which cannot write our temp folder.
            lines.append("user root")
        if self.acl is not None:
            acl_file = self._dir / "acl"
            acl_file.write_text(self.acl.strip() + "\n")
            lines.append(f"acl_file {acl_file}")
        if self.persistence:
            lines.append(f"persistence_location {self._dir}/")
            # Saved on a clean stop; a kill loses what was not saved, like a real crash.
            lines.append("autosave_interval 0")
        lines.extend(self.extra_config)
        path = self._dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"mosquitto already running on port {self.port}")
        config = self._write_config()
        self._process = subprocess.Popen(
            [self._binary, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.starts += 1
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                self._process = None
                raise RuntimeError(
                    f"mosquitto exited at start on port {self.port}: {stderr.strip()} "
                    f"{self._log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port} in time")

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text()[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM: a clean shutdown (mosquitto saves its persistence file, if enabled)."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a word, as in a crash or power loss."""
        self._end(signal.SIGKILL, 5.0)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (a half-open link)."""
        if self._process is not None and self.running:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None and self.running:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start()

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            process.send_signal(sig)
            if sig != signal.SIGKILL:
                process.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5.0)
        if process.stderr is not None:
            process.stderr.close()

    def close(self) -> None:
        """Kill the broker if running and remove its files. Idempotent."""
        self._end(signal.SIGTERM, 5.0)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"MosquittoBroker({self.host}:{self.port}, {state})"


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    """A started mosquitto on a free loopback port, without persistence; removed at teardown."""
    with MosquittoBroker() as broker:
        yield broker
