"""Where the real recordings are, and the expected verdicts (used by tests and the bench)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
EXCERPTS = REPO_ROOT / "tests" / "data"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"full recordings not present: {SHARED_DATA} (see tests/data/README.md for the "
    "vendored excerpts that always run)",
)
