"""The daemon under a service manager, from the outside: the sd_notify datagrams it sends on
start, reload and stop, the state directory systemd gives it, and journald priorities.

systemd itself is not available on the test machine (PID 1 is not systemd, so `systemd-run`
cannot start a unit; see docs/RELIABILITY.md), so the test plays the service manager: it binds
the notify socket and sets the variables systemd sets, as sd_notify(3) and systemd.exec(5)
describe them.
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.systemd.service import NotifySocket, Service, write_site

pytestmark = pytest.mark.slow


@dataclass
class Run:
    datagrams: list[str]
    before_reload_us: int
    after_reload_us: int
    log: str
    exit_code: int
    site: Path
    site_files_before: set[Path]
    site_files_after: set[Path]
    state_dir: Path


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def _monotonic_us() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@pytest.fixture(scope="module")
def service_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One life of the daemon: start, a valid reload, a refused reload, SIGTERM."""
    workdir = tmp_path_factory.mktemp("service")
    site = workdir / "etc"
    gateway_yaml = write_site(site)
    state_dir = workdir / "var-lib"
    state_dir.mkdir()
    notify = NotifySocket(workdir / "notify")
    before = _files(site)
    service = Service(
        gateway_yaml,
        workdir,
        env={"NOTIFY_SOCKET": str(notify.path), "STATE_DIRECTORY": str(state_dir)},
        journal=True,
    )
    try:
        assert notify.next().startswith("READY=1"), service.log()
        # A valid change: a slower poll. The daemon validates it and restarts its pipeline.
        write_site(site, poll_period_s=1.0)
        before_us = _monotonic_us()
        service.signal(signal.SIGHUP)
        assert notify.next().startswith("RELOADING=1"), service.log()
        assert notify.next().startswith("READY=1"), service.log()
        after_us = _monotonic_us()
        # An invalid one: refused, logged, nothing sent to systemd.
        gateway_yaml.write_text("site: [\n", encoding="utf-8")
        service.signal(signal.SIGHUP)
        service.wait_for_log(lambda text: "kept" in text and "Reload refused" in text)
        assert notify.pending() == []
        code = service.stop()
        notify.pending()
    finally:
        service.stop()
        notify.close()
    return Run(
        datagrams=notify.received,
        before_reload_us=before_us,
        after_reload_us=after_us,
        log=service.log(),
        exit_code=code,
        site=site,
        site_files_before=before,
        site_files_after=_files(site),
        state_dir=state_dir,
    )


def test_notify_sequence_ready_reload_refused_reload_and_stop(service_run: Run) -> None:
    kinds = [datagram.split("\n")[0] for datagram in service_run.datagrams]
    # READY on start; RELOADING then READY on the accepted reload, never STOPPING (systemd
    # takes STOPPING=1 from a running service as the start of a stop); nothing on the refused
    # one; STOPPING only at the final stop, which ends with status 0.
    assert kinds == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], service_run.datagrams
    assert service_run.exit_code == 0, service_run.log[-3000:]


def test_reloading_carries_the_monotonic_time_of_the_reload(service_run: Run) -> None:
    reloading = service_run.datagrams[1]
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", reloading)
    assert match, reloading
    # systemd (253+) matches the reload by CLOCK_MONOTONIC in microseconds; the test process
    # shares that clock, so the value lies between the SIGHUP and the READY that followed.
    assert service_run.before_reload_us <= int(match[1]) <= service_run.after_reload_us


def test_ready_says_what_runs(service_run: Run) -> None:
    ready = service_run.datagrams[0].split("\n")
    assert ready[1].startswith("STATUS=Gateway `edge-t` of site `plant-t` running")


def test_state_goes_to_state_directory_and_nothing_is_written_beside_gateway_yaml(
    service_run: Run,
) -> None:
    assert (service_run.state_dir / "state.db").is_file()
    assert (service_run.state_dir / "telemetry.db").is_file()
    assert service_run.site_files_after == service_run.site_files_before
    assert f"State in `{service_run.state_dir}`, from $STATE_DIRECTORY" in service_run.log


def test_every_journal_line_carries_the_syslog_priority_of_its_level(service_run: Run) -> None:
    lines = [line for line in service_run.log.splitlines() if line]
    priorities = {"DEBUG": "7", "INFO": "6", "WARNING": "4", "ERROR": "3", "CRITICAL": "2"}
    seen = set()
    for line in lines:
        match = re.match(r"<(\d)>(?:(DEBUG|INFO|WARNING|ERROR|CRITICAL) )?", line)
        assert match, f"no <N> prefix: {line!r}"
        if match[2]:
            assert match[1] == priorities[match[2]], line
            seen.add(match[2])
    # Startup is INFO; the unreachable broker is a WARNING; the refused reload an ERROR, so
    # `journalctl -p warning` shows the last two and not the first.
    assert {"INFO", "WARNING", "ERROR"} <= seen, service_run.log[-3000:]
    assert any(line.startswith("<3>ERROR gateway: Reload refused") for line in lines)
