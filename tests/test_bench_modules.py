"""Every benchmark still imports against the code it measures: a bench is run by hand, rarely,
so a renamed function would otherwise be found only by the next person who needs the figure."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.support.site import REPO

MODULES = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts)
    for path in (REPO / "bench").rglob("*.py")
    if path.name != "__init__.py"
)


def test_the_benchmarks_are_found() -> None:
    assert {"bench.site_page", "bench.polling.bench", "bench.vibration.bench"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_a_benchmark_module_imports(module: str) -> None:
    loaded = importlib.import_module(module)
    assert Path(loaded.__file__ or "").is_file()
