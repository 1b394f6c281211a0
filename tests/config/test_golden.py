"""Golden cases: each folder's YAML must produce exactly the lines in its expected.txt."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.config.check import EX_CONFIG, EX_OK, check_config

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())

# The cases issue 2 asks for; a rename or deletion must not silently drop one.
REQUIRED_CASES = {
    "good_minimal",
    "invalid_yaml",
    "unknown_key_in_point",
    "wrong_type",
    "missing_included_file",
    "duplicate_tag_id",
    "rule_names_missing_signal",
    "timeout_not_shorter_than_poll_period",
    "unknown_protocol",
    "several_files_at_once",
    "duplicate_key",
    # issue 15
    "named_files_missing",
    "opcua_client_certificate_and_key_missing",
    "overlapping_points",
    "good_modicon_address_warning",
    "good_every_default",
    "opcua_poll_timeout",
    "strict_types",
    "single_device_file",
    "good_single_device_file_not_included",
}


def test_required_cases_are_present() -> None:
    assert sorted(REQUIRED_CASES - set(CASES)) == []


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = GOLDEN / case
    expected = (folder / "expected.txt").read_text(encoding="utf-8").splitlines()
    command = folder / "command.txt"
    args = command.read_text(encoding="utf-8").split() if command.exists() else ["gateway.yaml"]
    site = args[args.index("--site") + 1] if "--site" in args else None
    monkeypatch.chdir(folder)
    out, err = io.StringIO(), io.StringIO()

    status = check_config(args[0], out, err, site=site)

    if case.startswith("good_"):
        # Warnings (stderr) first, then the summary line (stdout).
        lines = err.getvalue().splitlines() + out.getvalue().splitlines()
        assert (status, lines, len(out.getvalue().splitlines())) == (EX_OK, expected, 1)
        assert all(": warning: " in line for line in err.getvalue().splitlines())
    else:
        assert (status, err.getvalue().splitlines(), out.getvalue()) == (EX_CONFIG, expected, "")


def test_several_files_reported_sorted_by_file_then_line() -> None:
    lines = (GOLDEN / "several_files_at_once" / "expected.txt").read_text().splitlines()
    keys = [(line.split(":")[0], int(line.split(":")[1])) for line in lines]
    assert len({file for file, _ in keys}) == 4
    assert keys == sorted(keys)
