"""Shared test guards (STYLE.md, Tests): no task left behind, no network but loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.broker import mosquitto  # noqa: F401  (pytest fixture, used by name)

# Property tests (issue 11): no per-example deadline (a shared CI machine stalls now and then;
# the whole run is bounded by the example counts each test states instead), and the health
# checks that only say "this strategy makes big inputs", which is the point here.
settings.register_profile(
    "gateway",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gateway"))

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_loopback(address: Any) -> None:
    if not isinstance(address, tuple):  # AF_UNIX paths, socketpairs: local by nature
        return
    host = address[0]
    if host in ("localhost", ""):
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise AssertionError(f"test tried to reach non-loopback host {host!r}") from exc
    if not ip.is_loopback:
        raise AssertionError(f"test tried to reach non-loopback address {host!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_loopback(address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_loopback(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    yield


def _sqlite_workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


@pytest.fixture(autouse=True)
def _no_database_left_open() -> Iterator[None]:
    """An aiosqlite connection left open keeps a non-daemon thread alive, and the test run then
    hangs at interpreter exit. Fail the test that leaked it instead."""
    before = _sqlite_workers()
    yield
    deadline = time.monotonic() + 2.0
    leaked = _sqlite_workers() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = {t for t in leaked if t.is_alive()}
    assert not leaked, f"test left {len(leaked)} database connection(s) open (aiosqlite)"


@pytest.fixture(autouse=True)
async def _no_task_left_behind() -> AsyncIterator[None]:
    """Fails an async test that leaves tasks running (STYLE.md: tests fail on leftover tasks)."""
    before = set(asyncio.all_tasks())
    yield
    # Give cancelled tasks one turn to finish unwinding before judging.
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leftover = [
        t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()
    ]
    for task in leftover:
        task.cancel()
    names = sorted(t.get_name() for t in leftover)
    assert not leftover, f"test left tasks running: {names}"


def pytest_unconfigure(config: pytest.Config) -> None:
    """A non-daemon thread still alive here would hang the interpreter at exit and CI with it
    (seen once with an aiosqlite worker): name it and end the run as failed instead."""
    deadline = time.monotonic() + 5.0
    lingering = _lingering_threads()
    while lingering and time.monotonic() < deadline:
        time.sleep(0.05)
        lingering = _lingering_threads()
    if lingering:
        names = ", ".join(sorted(t.name for t in lingering))
        sys.stderr.write(f"\nthreads still running after the tests, exiting as failed: {names}\n")
        sys.stderr.flush()
        os._exit(3)


def _lingering_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
