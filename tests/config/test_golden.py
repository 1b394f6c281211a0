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
}


def test_required_cases_are_present() -> None:
    assert sorted(REQUIRED_CASES - set(CASES)) == []


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = GOLDEN / case
    expected = (folder / "expected.txt").read_text(encoding="utf-8").splitlines()
    monkeypatch.chdir(folder)
    out, err = io.StringIO(), io.StringIO()

    status = check_config("gateway.yaml", out, err)

    if case.startswith("good_"):
        assert (status, out.getvalue().splitlines(), err.getvalue()) == (EX_OK, expected, "")
    else:
        assert (status, err.getvalue().splitlines(), out.getvalue()) == (EX_CONFIG, expected, "")


def test_several_files_reported_sorted_by_file_then_line() -> None:
    lines = (GOLDEN / "several_files_at_once" / "expected.txt").read_text().splitlines()
    keys = [(line.split(":")[0], int(line.split(":")[1])) for line in lines]
    assert len({file for file, _ in keys}) == 4
    assert keys == sorted(keys)
