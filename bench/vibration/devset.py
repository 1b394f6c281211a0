"""The development recordings of ../shared/data, their truth, and what both paths make of them.

One `edge-gateway analyze FILE --json` run per record gives both paths: the whole-record
diagnosis (`faults`) and the daemon replay (`daemon.feeds`: the default rule's detector fed
16384-sample blocks, contiguous and half-overlapping). Used by `confusion.py` (the published
table) and by tests/detectors/vibration/test_real_recordings.py (no wrong location, no false
alarm), so both read the same truth.

Truth: CWRU and MFPT from the file names (B = ball, IR = inner race, OR = outer race); IMS
test 1 start-of-run snapshots are healthy (every channel); HIT-SM seeded IR/OR faults from the
file names. The HIT-SM `Normal` files are not a healthy baseline (their MANIFEST: 50-300 times
quieter than every fault file, no 1x line at the stated speed): their truth is `unknown`, and
what we report on them is only whether anything is called.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cli import analyze

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
HIT_FS_HZ = 51200.0  # hit_sm/MANIFEST.md: from the source README, not stored in the files

SHORT = {
    "bearing.outer_race": "outer",
    "bearing.inner_race": "inner",
    "bearing.rolling_element": "ball",
    "bearing.cage": "cage",
}
# Smith & Randall (MSSP 64-65, 2015), DE channel, as in ../shared/data/cwru/MANIFEST.md.
SMITH_RANDALL = {
    "normal_0_97.mat": "baseline",
    "12k_Drive_End_B007_0_118.mat": "N1 (M1/M2/M3)",
    "12k_Drive_End_B014_1_186.mat": "P2",
    "12k_Drive_End_B021_0_222.mat": "M1 P1, M2 Y2, M3 Y2",
    "12k_Drive_End_B028_2_3007.mat": "M1 Y2",
    "12k_Drive_End_IR007_0_105.mat": "Y2",
    "12k_Drive_End_IR014_1_170.mat": "Y2",
    "12k_Drive_End_IR021_2_211.mat": "Y1",
    "12k_Drive_End_OR007@3_0_144.mat": "Y2",
    "12k_Drive_End_OR007@6_0_130.mat": "Y1",
    "12k_Drive_End_OR014@6_1_198.mat": "M1 P2, M2 N2, M3 N2",
    "12k_Drive_End_OR021@6_1_235.mat": "Y2",
}
PATHS = ("analyze", "daemon, contiguous", "daemon, half-overlapping")


@dataclass(frozen=True)
class DevRecord:
    dataset: str  # cwru | mfpt | ims | hit_sm
    label: str  # as shown in the tables
    path: Path
    truth: str  # normal | outer | inner | ball | unknown
    args: tuple[str, ...] = ()  # what analyze needs beyond the file's own layout

    def analyze_args(self) -> list[str]:
        return [str(self.path), *self.args, "--json"]


def _truth_from_name(name: str) -> str:
    for pattern, truth in (
        (r"(^|_)B\d", "ball"),
        (r"(^|_)IR\d|Inner", "inner"),
        (r"(^|_)OR\d|Outer", "outer"),
    ):
        if re.search(pattern, name):
            return truth
    return "normal"


def dev_records(data: Path = DATA) -> list[DevRecord]:
    out: list[DevRecord] = []
    for path in sorted((data / "cwru").glob("*.mat")):
        out.append(DevRecord("cwru", path.name, path, _truth_from_name(path.name)))
    for path in sorted((data / "mfpt").glob("*.mat")):
        out.append(DevRecord("mfpt", path.name, path, _truth_from_name(path.name)))
    for path in sorted((data / "ims").glob("2003.*")):
        for channel in range(1, 9):
            label = f"{path.name} ch {channel}"
            out.append(DevRecord("ims", label, path, "normal", ("--channel", str(channel))))
    for path in sorted((data / "hit_sm" / "spectraquest_mfs").glob("*.mat")):
        rpm = path.stem.split("_")[1]
        truth = "unknown" if path.stem.startswith("Normal") else _truth_from_name(path.stem)
        args = ("--fs", f"{HIT_FS_HZ:g}", "--rpm", rpm, "--bearing", "6205")
        out.append(DevRecord("hit_sm", path.name, path, truth, args))
    return out


def run_analyze(record: DevRecord) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    analyze.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = analyze.run(parser.parse_args(record.analyze_args()), out=out, err=err)
    if code != 0:
        raise RuntimeError(f"{record.label}: analyze exited {code}: {err.getvalue().strip()}")
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def calls_by_path(result: dict[str, Any]) -> dict[str, list[str]]:
    """Fault codes each path raises: analyze's faults, the tickets each daemon feed opens."""
    out = {PATHS[0]: [f["code"] for f in result["faults"]]}
    for name, feed in zip(PATHS[1:], result["daemon"]["feeds"], strict=True):
        out[name] = [t["code"] for t in feed["tickets"] if t["event"] == "opened"]
    return out


def looks_by_path(result: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Per daemon feed, the fault codes of every analysis before confirmation (its `looks`):
    what the detector's decision says on each window, tickets or not."""
    return {
        name: [look["calls"] for look in feed["looks"]]
        for name, feed in zip(PATHS[1:], result["daemon"]["feeds"], strict=True)
    }


def not_diagnosed(result: dict[str, Any]) -> dict[str, str | None]:
    return {
        name: feed["not_diagnosed"]
        for name, feed in zip(PATHS[1:], result["daemon"]["feeds"], strict=True)
    }


def outcome(truth: str, codes: list[str]) -> str:
    """located | missed | wrong location | normal | false alarm | called | not called.

    A bearing location other than the truth is a wrong location even beside the right one
    (the daemon would open a ticket for each). On a healthy record any call is a false alarm.
    """
    bearing = {SHORT[c] for c in codes if c in SHORT}
    if truth == "unknown":
        return "called" if codes else "not called"
    if truth == "normal":
        return "false alarm" if codes else "normal"
    if bearing - {truth}:
        return "wrong location"
    return "located" if truth in bearing else "missed"
