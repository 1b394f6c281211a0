"""The console script as a user runs it: `python -m gateway ...` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
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


def test_schema_prints_the_shipped_json_schema():
    result = run_cli("schema")
    assert result.returncode == 0
    shipped = json.loads((REPO / "configs" / "schema" / "config.schema.json").read_text())
    assert json.loads(result.stdout) == shipped


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
