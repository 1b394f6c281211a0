"""One wheel per test session, built from a copy of the tree and installed into a fresh
virtual environment, as a user installs the gateway (issue 14): nothing of the checkout is on
the path of the commands run there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.site import REPO

# What a clean clone does not have: the developer's environment, caches, build output and
# any state a run left behind.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", "var", "*.db", "*.db-wal", "*.db-shm",
)  # fmt: skip


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path
    elsewhere: Path  # the working directory for commands: outside the checkout

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["XDG_STATE_HOME"] = str(self.elsewhere / "state")
        return env

    def run(
        self, *args: str, timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "edge-gateway"), *args], cwd=cwd or self.elsewhere, env=self.env(),
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def python(self, code: str) -> str:
        result = subprocess.run(
            [str(self.bin / "python"), "-c", code], cwd=self.elsewhere, env=self.env(),
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return result.stdout.strip()


def _run(argv: Sequence[str], timeout: float) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"{' '.join(argv)}:\n{output}"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE, symlinks=True)
    dist = root / "dist"
    # pip builds in an isolated environment from the configured index (cached after once).
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist),
          str(source)], timeout=600)  # fmt: skip
    (wheel,) = dist.glob("edge_gateway-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
         timeout=900)  # fmt: skip
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return Installed(venv, wheel, elsewhere)
