"""Regenerate bench/vibration/STRESS.md: both paths on conditions built from the dev files.

The development set is small and its records are clean; the risk that matters -- a
wrong-location ticket -- shows on other recordings. Without fetching more data, the dev files
give harder conditions by changing what `analyze` is told, the mistakes users make and the
sensors they have:

- the CWRU fan-end (FE) and base (BA) accelerometers read for the drive-end bearing (6205):
  the same defects seen from farther away (truth: the drive-end label);
- the CWRU fan-end channel read as its own bearing (6203): the fan-end bearing is healthy, so
  any call is a false alarm (another bearing's defect seen through the wrong kinematics);
- the sample rate stated 2.4 % wrong, and the speed 1.5 % wrong, on every record (truth as
  labelled; a wrong location stays wrong).

Nothing here tunes anything: the same code and settings as CONFUSION.md. Usage:
python bench/vibration/stress.py
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if not __package__:
    # Run as `python bench/vibration/stress.py`: the path starts with this folder, where
    # bench.py would shadow the `bench` package; the checkout takes its place.
    sys.path[0] = str(REPO)

from bench.vibration.devset import (  # noqa: E402
    PATHS,
    DevRecord,
    calls_by_path,
    dev_records,
    looks_by_path,
    outcome,
    run_analyze,
)
from detectors.vibration.recordings import read_recording  # noqa: E402

OUT = Path(__file__).with_name("STRESS.md")
CWRU_FS = {"normal_0_97.mat": 48000.0}


def _fs_of(record: DevRecord) -> float:
    if record.dataset == "cwru":
        return CWRU_FS.get(record.path.name, 12000.0)
    if record.dataset == "mfpt":
        return 48828.0
    if record.dataset == "ims":
        return 20480.0
    return float(record.args[record.args.index("--fs") + 1])


def _rpm_of(record: DevRecord) -> float | None:
    if "--rpm" in record.args:
        return float(record.args[record.args.index("--rpm") + 1])
    return None


def _without(args: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """`args` less `flag` and its value."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        else:
            out.append(a)
    return tuple(out)


def conditions(records: list[DevRecord]) -> list[tuple[str, DevRecord]]:
    out: list[tuple[str, DevRecord]] = []
    for r in records:
        if r.dataset != "cwru":
            continue
        channels = read_recording(r.path).channels  # 97 has no BA, the 0.028 in records DE only
        for channel in [c for c in ("FE", "BA") if c in channels]:
            out.append((f"CWRU {channel} channel, 6205", replace(
                r, label=f"{r.label} {channel}", args=("--channel", channel, "--bearing", "6205")
            )))  # fmt: skip
        if "FE" in channels:
            out.append(("CWRU FE channel, its own 6203", replace(
                r, label=f"{r.label} FE/6203", truth="normal", args=("--channel", "FE")
            )))  # fmt: skip
    base = [r for r in records if r.dataset != "ims" or r.label.endswith("ch 1")]
    for r in base:
        rest = _without(r.args, "--fs")
        for factor in (0.976, 1.024):
            fs = _fs_of(r) * factor
            out.append((f"sample rate stated x{factor}", replace(
                r, label=f"{r.label} fs x{factor}", args=(*rest, "--fs", f"{fs:.6g}")
            )))  # fmt: skip
        for factor in (0.985, 1.015):
            rpm = _rpm_of(r)
            if rpm is None:
                continue
            without = _without(r.args, "--rpm")
            out.append((f"speed stated x{factor}", replace(
                r, label=f"{r.label} rpm x{factor}", args=(*without, "--rpm", f"{rpm * factor:g}")
            )))  # fmt: skip
    return out


def main() -> int:
    records = dev_records()
    # The file-layout speeds, made explicit so that they can be perturbed.
    speeds = {}
    for r in records:
        if r.dataset in ("cwru", "mfpt", "ims") and _rpm_of(r) is None:
            speeds[r] = run_analyze(r)["speed"]["rpm"]
    records = [
        replace(r, args=(*r.args, "--rpm", f"{speeds[r]:g}")) if r in speeds else r
        for r in records
    ]
    table: dict[str, Counter[str]] = {}
    looked: dict[str, Counter[str]] = {}
    flagged: list[str] = []
    flagged_looks: list[str] = []
    for family, record in conditions(records):
        result_json = run_analyze(record)
        calls = calls_by_path(result_json)
        for path in PATHS:
            result = outcome(record.truth, calls[path])
            table.setdefault(f"{family}|{path}", Counter())[result] += 1
            if result in ("wrong location", "false alarm"):
                flagged.append(f"{record.dataset}/{record.label} ({path}): {calls[path]}")
        for path, looks in looks_by_path(result_json).items():
            counter = looked.setdefault(f"{family}|{path}", Counter())
            for look in looks:
                result = outcome(record.truth, [c for c in look if c.startswith("bearing.")])
                counter[result] += 1
                counter["all"] += 1
                if result in ("wrong location", "false alarm"):
                    flagged_looks.append(f"{record.dataset}/{record.label} ({path}): {look}")
    lines = [
        "# Vibration family: both paths on conditions built from the dev files",
        "",
        "Generated by `python bench/vibration/stress.py` (see its docstring for why and how). "
        "Same code and settings as CONFUSION.md; the daemon paths are the default rule's "
        "detector fed 16384-sample blocks (blocks of fewer than 8 revolutions assembled into "
        "the window `analyze` uses). Looks: every analysis of the daemon before confirmation, "
        "by the bearing location it alone calls (tickets need three looks of separate data).",
        "",
        "| condition | path | located | missed | wrong location | normal | false alarm | "
        "looks: located / wrong / false alarm (of all) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    families = list(dict.fromkeys(k.split("|")[0] for k in table))
    for family in families:
        for i, path in enumerate(PATHS):
            c = table[f"{family}|{path}"]
            lines.append(
                f"| {family if i == 0 else ''} | {path} | {c['located']} | {c['missed']} | "
                f"**{c['wrong location']}** | {c['normal']} | **{c['false alarm']}** | "
                + (
                    f"{lk['located']} / **{lk['wrong location']}** / **{lk['false alarm']}** "
                    f"({lk['all']})"
                    if (lk := looked.get(f"{family}|{path}"))
                    else "-"
                )
                + " |"
            )
    lines += ["", "Wrong locations and false alarms: " + ("; ".join(flagged) or "none") + "."]
    lines += [
        "",
        "Looks (single analyses, no ticket) with a wrong location or a false alarm: "
        + ("; ".join(flagged_looks) or "none")
        + ".",
    ]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
