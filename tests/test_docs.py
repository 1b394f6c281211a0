"""What the README and the docs claim, checked: the files they name exist in the checkout, and
the vibration standard they name is the one `analyze` reports."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from gateway.config.schema import device_schema
from tests.support.site import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        REPO / "configs" / "examples" / "README.md", REPO / "bench" / "vibration" / "README.md",
        REPO / "tests" / "data" / "README.md"]  # fmt: skip
TOP_LEVEL = ("configs/", "docs/", "bench/", "tests/", "gateway/", "protocols/", "detectors/",
             "uplink/", "simulator/", "systemd/", ".ci/")  # fmt: skip
# Named on purpose although a clone lacks them: the full public recordings, which the README
# says how to place beside the checkout (the vendored excerpts in tests/data/ always run).
OUTSIDE_THE_CHECKOUT = {"../shared/data"}


def _links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and t[0] != "#"]


def _backticked_paths(text: str) -> list[str]:
    return [
        token.rstrip(".,")
        for token in re.findall(r"`([^`\s]+)`", text)
        if token.startswith(TOP_LEVEL) and not re.search(r"[<>*{}]|\.\.\.", token)
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_files_the_docs_name_are_in_the_checkout(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    missing = [link for link in _links(text) if not (doc.parent / link.split("#")[0]).exists()]
    missing += [path for path in _backticked_paths(text) if not (REPO / path).exists()]
    for name in re.findall(r"(?<![\w/.-])([\w-]+\.md)\b", text):
        if not list(REPO.glob(f"**/{name}")):
            missing.append(name)  # e.g. a design document that is not part of the repository
    outside = [
        path
        for path in re.findall(r"`(\.\./[^`]+)`", text)
        if not path.startswith(tuple(OUTSIDE_THE_CHECKOUT))
    ]
    assert missing + outside == []


def test_the_docs_name_the_severity_standard_that_analyze_reports(tmp_path, capsys) -> None:
    from gateway.cli.main import main

    with np.load(REPO / "tests" / "data" / "cwru_or007_6_130_de.npz") as excerpt:
        recording = tmp_path / "rec.npy"
        np.save(recording, excerpt["signal"])
        fs, rpm = str(float(excerpt["fs"])), str(float(excerpt["rpm"]))
    assert main(["analyze", str(recording), "--fs", fs, "--rpm", rpm, "--bearing", "6205"]) == 0
    standard = re.compile(r"ISO (?:10816|20816)(?:-\d)?")
    (reported,) = set(standard.findall(capsys.readouterr().out))
    named = set(standard.findall((REPO / "README.md").read_text()))
    named |= set(standard.findall(str(device_schema())))  # the editor's hover text
    assert named == {reported}
