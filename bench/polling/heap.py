"""Where the daemon's memory goes, in the daemon exactly as `bench.polling.bench` runs it:
`python -m gateway run` in its own process on the generated site, the plant, mosquitto and
the acking central system, with tracemalloc started before the daemon imports anything and
one snapshot taken `--at` seconds after it is ready (from a thread, while it polls).

    .venv/bin/python -m bench.polling.heap --devices 500 --at 60 --top 25
    .venv/bin/python -m bench.polling.heap --devices 10 --registers 30 --group traceback

Printed: tracemalloc's total and per device, VmRSS, the top allocation sites grouped by
`--group` (lineno, filename or traceback; tracebacks `--frames` deep, shown innermost last),
and the live objects by type from `gc.get_objects()` (containers the collector tracks only:
str, int and float are not counted there but are in tracemalloc's sizes). tracemalloc slows
the daemon and its own bookkeeping is in VmRSS: the figures are sizes, not speeds, and the
RSS printed is not the bench's.

The daemon side is `python -m bench.polling.heap daemon --out DIR --at S -- ARGS...`: it
starts tracemalloc, arms the snapshot timer and runs `gateway.cli.main(ARGS)`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import pickle
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

SNAPSHOT = "snapshot.pickle"
TYPES = "types.json"


def _take(out: Path) -> None:
    snapshot = tracemalloc.take_snapshot()
    traced, peak = tracemalloc.get_traced_memory()
    # gc.get_objects() does not list what `gc.freeze()` moved out of the collector's sight
    # (the daemon freezes what start-up built): let it see them for the count.
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    if frozen:
        gc.freeze()
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))
    tmp = out / (SNAPSHOT + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump(snapshot, f)
    (out / TYPES).write_text(
        json.dumps({"traced": traced, "peak": peak, "rss_mb": rss, "types": counts.most_common()})
    )
    tmp.rename(out / SNAPSHOT)


def daemon(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--at", type=float, required=True)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("gateway_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    tracemalloc.start(args.frames)
    from gateway import app

    ready = threading.Event()
    settle_heap = app.settle_heap

    def settled() -> None:  # called once every source runs (and on each reload)
        settle_heap()
        ready.set()

    app.settle_heap = settled

    def later() -> None:
        ready.wait()
        time.sleep(args.at)
        _take(args.out)

    threading.Thread(target=later, name="heap-snapshot", daemon=True).start()
    from gateway.cli.main import main

    # What the bench appends: `-m gateway run SITE`; the CLI takes what follows `-m gateway`.
    rest = list(args.gateway_args)
    return main(rest[rest.index("run") :])


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in filename:
            return filename.split(marker)[-1]
    parts = Path(filename).parts
    for root in ("gateway", "protocols", "detectors", "uplink", "bench", "simulator"):
        if root in parts:
            return str(Path(*parts[parts.index(root) :]))
    return filename


def report(out: Path, devices: int, top: int, group: str, frames: int) -> None:
    with (out / SNAPSHOT).open("rb") as f:
        snapshot: tracemalloc.Snapshot = pickle.load(f)
    info = json.loads((out / TYPES).read_text())
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    traced = info["traced"]
    print(f"{devices} devices: traced {traced / 1e6:.2f} MB ({traced / devices / 1e3:.1f} kB "
          f"per device), VmRSS {info['rss_mb']:.1f} MB with tracemalloc's own")  # fmt: skip
    stats = snapshot.statistics(group, cumulative=False)
    for stat in stats[:top]:
        print(f"{stat.size / 1e6:8.3f} MB {stat.count:9d} blocks")
        shown = stat.traceback if group == "traceback" else stat.traceback[-1:]
        for frame in list(shown)[-frames:]:
            print(f"      {_short(frame.filename)}:{frame.lineno}")
    print("live objects by type (gc.get_objects):")
    for name, count in info["types"][:top]:
        print(f"{count:9d}  {name}")


def main() -> None:
    if sys.argv[1:2] == ["daemon"]:
        sys.exit(daemon(sys.argv[2:]))
    from bench.polling import bench
    from bench.polling.bench import Scenario, run_once

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--registers", type=int, default=30)
    parser.add_argument("--at", type=float, default=60.0, help="seconds after the daemon is ready")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", choices=("lineno", "filename", "traceback"), default="lineno")
    parser.add_argument("--frames", type=int, default=12, help="traceback depth kept")
    parser.add_argument("--keep", type=Path, help="keep the snapshot in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-heap-") as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        (out / SNAPSHOT).unlink(missing_ok=True)
        prefix = ("-m", "bench.polling.heap", "daemon", "--out", str(out.resolve()),
                  "--at", str(args.at), "--frames", str(args.frames), "--")  # fmt: skip
        scenario = Scenario("heap", args.devices, args.registers, 1.0)
        bench.START_TIMEOUT_S = 900.0  # start-up under tracemalloc is several times slower
        asyncio.run(run_once(scenario, seconds=5.0, warmup=args.at + 5.0, daemon_prefix=prefix))
        report(out, args.devices, args.top, args.group, args.frames)


if __name__ == "__main__":
    main()
