"""The console script as a user runs it: `python -m gateway ...` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from gateway.cli.main import main
from tests.support.site import REPO


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_accepts_the_example_site_with_a_summary():
    result = run_cli("check-config", "configs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")
    assert "device" in result.stdout and "rule" in result.stdout


def test_check_config_reports_file_and_line_and_exits_78(tmp_path: Path):
    (tmp_path / "devices").mkdir()
    (tmp_path / "gateway.yaml").write_text("site: s\ngateway_id: g\nstorage:\n  colour: red\n")
    result = run_cli("check-config", str(tmp_path / "gateway.yaml"), cwd=tmp_path)
    assert result.returncode == 78
    assert "gateway.yaml:4: storage.colour: unknown key `colour`" in result.stderr.splitlines()


def test_run_refuses_a_bad_config_with_78_and_starts_nothing(tmp_path: Path):
    (tmp_path / "gateway.yaml").write_text("site: [\n")
    result = run_cli("run", str(tmp_path / "gateway.yaml"), cwd=tmp_path)
    assert result.returncode == 78
    assert "invalid YAML" in result.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(
    ("flags", "file_name"),
    [((), "config.schema.json"), (("--gateway",), "gateway.schema.json"),
     (("--device",), "device.schema.json")],
)  # fmt: skip
def test_schema_prints_the_shipped_json_schema(flags: tuple[str, ...], file_name: str):
    result = run_cli("schema", *flags)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "configs" / "schema" / file_name).read_text()


def test_version_is_the_package_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"edge-gateway {version('edge-gateway')}\n"


def test_example_lists_the_shipped_sites_and_copies_one_without_overwriting(tmp_path: Path):
    listing = run_cli("example")
    assert listing.returncode == 0
    names = [line.split()[0] for line in listing.stdout.splitlines() if not line[0].isspace()]
    assert names == ["demo", "can-socketcan", "modbus-rtu", "opcua-secure"]
    assert run_cli("example", "modbus-rtu").stdout.strip().endswith("examples/modbus-rtu")
    assert run_cli("example", "nonesuch").returncode == 66
    target = tmp_path / "etc-edge-gateway"
    (target / "devices").mkdir(parents=True)  # as tmpfiles.d leaves it: folders, no files
    assert run_cli("example", "demo", "--copy", str(target)).returncode == 0
    assert run_cli("check-config", str(target)).returncode == 0
    assert (target / "schema" / "device.schema.json").is_file()
    assert not (target / "examples").exists()
    (target / "gateway.yaml").write_text("site: mine\n")
    again = run_cli("example", "demo", "--copy", str(target))
    assert again.returncode == 73 and "would overwrite" in again.stderr
    assert (target / "gateway.yaml").read_text() == "site: mine\n"


async def test_status_piped_into_a_reader_that_goes_away_ends_quietly(tmp_path: Path):
    """`edge-gateway status | head -1`: the reader closes the pipe; no traceback, exit 141."""
    import asyncio
    import os

    from gateway.runtime.health import HealthServer
    from tests.gateway.test_health import REPORT

    async def collect() -> dict[str, object]:
        return REPORT

    server = HealthServer(collect, lambda: True, "127.0.0.1", 0)
    await server.start()
    try:
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader has gone before the first line is written
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "status", "--url", f"http://127.0.0.1:{server.port}",
            stdout=write_end, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(write_end)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await server.close()
    assert stderr.decode() == ""
    assert proc.returncode == 141


def test_no_command_prints_usage_and_exits_64(capsys: pytest.CaptureFixture[str]):
    assert main([]) == 64
    assert "usage" in capsys.readouterr().err


async def test_stopping_cancels_again_a_task_that_swallowed_the_first_cancel():
    import asyncio

    from gateway.runtime import tasks

    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as a library's wait_for can do on Python 3.11

    task = asyncio.create_task(stubborn(), name="source[stubborn]")
    await asyncio.sleep(0)
    original = tasks.CANCEL_RETRY_S
    tasks.CANCEL_RETRY_S = 0.05
    try:
        await asyncio.wait_for(tasks.cancel_and_wait([task]), 2)
    finally:
        tasks.CANCEL_RETRY_S = original
    assert task.cancelled() and swallowed == 1


def test_run_does_not_load_the_libraries_of_the_other_commands(tmp_path: Path):
    """Issue 17: a daemon polling Modbus carries neither numpy/scipy (the vibration tools'
    parsers) nor every protocol's library (`discover`'s parsers): 25 MB of RSS on a one-device
    site. The config is missing, so `run` stops at once with 78, after parsing."""
    probe = (
        "import sys\n"
        "from gateway.cli.main import main\n"
        f"code = main(['run', {str(tmp_path / 'missing.yaml')!r}])\n"
        "print(code, sorted(m for m in ('numpy', 'scipy', 'asyncua', 'can', 'aiohttp')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split("\n")[-2] == "78 []", done.stdout + done.stderr
