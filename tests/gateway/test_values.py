"""`edge-gateway values` (issue 15): telemetry.db read back, decoded, as a table or CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.cli.values import parse_duration
from gateway.core.records import Quality, Sample
from gateway.store import TelemetryStore
from tests.support.site import REPO


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def _write(db: Path, samples: list[Sample]) -> None:
    store = await TelemetryStore.open(db)
    try:
        await store.write_samples(samples)
    finally:
        await store.close()


@pytest.fixture
def telemetry(tmp_path: Path) -> tuple[Path, float]:
    now = time.time()
    polls = []
    for i in range(3):
        ts = now - 30 + i  # three polls, a second apart, half a minute ago
        polls += [
            Sample("pump-1.temp", ts, 41.5 + i, source_ts=ts - 0.25),
            Sample.bad("pump-1.flow", ts, "exception 2 (illegal data address) reading 1"),
            Sample("pump-1.mode", ts, 7.0, Quality.UNCERTAIN, reason="state 7 is not in the"
                   " configured enumeration"),
            Sample("motor-1.speed", ts, 1480.0),
        ]
    polls.append(Sample("pump-1.temp", now - 7200, 20.0))  # two hours ago
    db = tmp_path / "telemetry.db"
    asyncio.run(_write(db, polls))
    return db, now


def test_table_shows_every_sample_of_the_window_with_quality_and_reason(telemetry) -> None:
    db, _ = telemetry
    result = run_cli("values", "--db", str(db), "--device", "pump-1", "--since", "1m")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["time", "(UTC)", "tag", "value", "unit", "quality", "reason"]
    rows = lines[2:]
    assert len(rows) == 9 and not any("motor-1" in row for row in rows)
    assert [row.split()[1:4] for row in rows[:3]] == [
        ["pump-1.temp", "41.5", "GOOD"],
        ["pump-1.flow", "BAD", "exception"],
        ["pump-1.mode", "7", "UNCERTAIN"],
    ]
    assert rows[1].endswith("exception 2 (illegal data address) reading 1")
    assert "20" not in [row.split()[2] for row in rows]  # the old sample is outside 1 m


def test_csv_has_a_header_and_machine_readable_values(telemetry) -> None:
    db, now = telemetry
    result = run_cli("values", "--db", str(db), "--since", "3h", "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 13
    assert rows[0]["point"] == "temp" and float(rows[0]["value"]) == 20.0  # oldest first
    temp = [r for r in rows if r["point"] == "temp"][1]
    assert float(temp["ts"]) == pytest.approx(now - 30)
    assert temp["source_time"].endswith("Z") and temp["quality"] == "GOOD"
    flow = [r for r in rows if r["point"] == "flow"]
    assert all(r["value"] == "" and r["quality"] == "BAD" for r in flow)


def test_limit_keeps_the_newest_samples(telemetry) -> None:
    db, _ = telemetry
    result = run_cli("values", "--db", str(db), "--since", "3h", "--limit", "4", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 4
    assert {r["ts"] for r in rows} == {rows[-1]["ts"]}  # the last poll's four samples


def test_units_come_from_the_configuration(tmp_path: Path) -> None:
    import shutil

    site = tmp_path / "site"
    shutil.copytree(REPO / "configs", site, ignore=shutil.ignore_patterns("var"))
    gateway_yaml = site / "gateway.yaml"
    gateway_yaml.write_text(
        gateway_yaml.read_text().replace("storage:\n", "storage:\n  directory: var\n", 1)
    )
    db = site / "var" / "telemetry.db"
    asyncio.run(_write(db, [Sample("pump-1.bearing_temp", time.time() - 1, 55.0),
                            Sample("motor-1.current", time.time() - 1, 28.0)]))  # fmt: skip
    result = run_cli("values", "--config", str(site), "--csv")
    assert result.returncode == 0, result.stderr
    units = {r["point"]: r["unit"] for r in csv.DictReader(io.StringIO(result.stdout))}
    assert units == {"bearing_temp": "degC", "current": "A"}  # the second from the DBC


def test_missing_database_and_bad_duration(tmp_path: Path) -> None:
    missing = run_cli("values", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 66 and "no such file" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    bad = run_cli("values", "--db", str(tmp_path / "none.db"), "--since", "ten minutes")
    assert bad.returncode == 64 and "is not a duration" in bad.stderr


def test_an_empty_window_says_so_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    asyncio.run(_write(db, [Sample("pump-1.temp", time.time() - 7200, 1.0)]))
    result = run_cli("values", "--db", str(db), "--since", "5m")
    assert (result.returncode, result.stdout) == (0, "")
    assert "No samples in telemetry.db" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
     ("0.5m", 30)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10x", "-5", "0", "10m5", "1 h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
