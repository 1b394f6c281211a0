"""Habits of the production code that a reviewer would otherwise have to remember: the history
of the project lives in git, not in comments; exit statuses come from their one module."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core import exit_codes
from tests.support.site import REPO

PACKAGES = ("gateway", "protocols", "detectors", "uplink", "simulator")
SOURCES = sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))
# "issue 12", "issues 3 and 4", "Issue #7": a pointer into the tracker's history.
ISSUE_CITATION = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)
EXIT_STATUSES = {
    value
    for name, value in vars(exit_codes).items()
    if name.startswith("EX_") and isinstance(value, int) and value != 0
}


def comments_and_docstrings(path: Path) -> Iterator[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring and node.body:
                yield node.body[0].lineno, docstring


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_comment_or_docstring_narrates_the_tracker(path: Path) -> None:
    cited = [f"line {n}: {m.group(0)}" for n, text in comments_and_docstrings(path)
             for m in ISSUE_CITATION.finditer(text)]  # fmt: skip
    assert cited == []


def literal_exit_statuses(path: Path) -> Iterator[str]:
    """`return 78`, `sys.exit(69)`, `SystemExit(65)`: an exit status written as a number."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        values: list[ast.expr] = []
        if isinstance(node, ast.Return) and node.value is not None:
            values.append(node.value)
        elif isinstance(node, ast.Call):
            callee = ast.unparse(node.func)
            if callee in {"sys.exit", "SystemExit", "os._exit", "exit"}:
                values.extend(node.args)
        for value in values:
            if isinstance(value, ast.Constant) and value.value in EXIT_STATUSES:
                yield f"line {value.lineno}: {ast.unparse(value)}"


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if p != REPO / "gateway" / "core" / "exit_codes.py"],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_exit_statuses_come_from_their_one_module(path: Path) -> None:
    assert list(literal_exit_statuses(path)) == []


def test_the_guards_see_what_they_guard_against(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Module."""\n# The fix for issue 12.\n\ndef main() -> int:\n'
        '    """Since Issue #3."""\n    return 78\n'
    )
    texts = [text for _, text in comments_and_docstrings(sample)]
    assert [m.group(0) for text in texts for m in ISSUE_CITATION.finditer(text)] == [
        "issue 12",
        "Issue #3",
    ]
    assert list(literal_exit_statuses(sample)) == ["line 6: 78"]
