"""How many 25.6 kHz channels the vibration pipeline keeps up with on one core.

Each channel delivers a 16384-point block every 8192 samples (50 % overlap): 3.125 blocks/s.
We time, in the same run and on the same blocks, (a) the full pipeline -- `VibrationDetector.
update` on a `Waveform` for every block -- and (b) a bare `numpy.fft.rfft` of each block.
The pipeline is timed twice: analysing every block on its own (`average_blocks=1`, the
default: features, ISO zone, orders, whitening, two envelope spectra, bearing combs,
confirmation and baseline per block) and with spectral averaging (`average_blocks=64`: every
block checked, transformed and averaged; severity, orders, envelope spectra of 2 of the 64
blocks, bearing combs, confirmation and baseline once per round of 64 blocks, 20.5 s). The
band is re-chosen by spectral kurtosis every 16 analyses. Single-threaded BLAS/FFT (one
core). The timed blocks are a whole number of rounds, after a warm-up round. Prints one
table; run `python bench/vibration/bench.py [--repeats 5] [--profile]` (`--profile` adds where
the averaged pipeline's time goes, by function, from cProfile over one extra run).

`--rpm 600` times a slow shaft: a 16384-point block then holds 6.4 revolutions, fewer than
the diagnosis needs, and the detector assembles contiguous blocks into 131072-sample windows
(51.2 revolutions, what `analyze` uses; detectors/vibration/window.py) analysed every 65536
new samples. Only the default `average_blocks=1` is timed then (a round of 64 windows is 164 s
of data).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from detectors.vibration import BearingCatalogue, VibrationDetector  # noqa: E402
from detectors.vibration.checks import MIN_REVOLUTIONS_PER_BLOCK  # noqa: E402
from detectors.vibration.window import window_length  # noqa: E402
from gateway.core.records import Waveform  # noqa: E402

FS = 25600.0
BLOCK = 16384
HOP = BLOCK // 2
BLOCKS_PER_CHANNEL_S = FS / HOP


def outer_race_signal(seconds: float, rpm: float, seed: int = 1) -> np.ndarray:
    """Impacts at BPFO (SKF 6205) ringing a 3.2 kHz resonance, 1x/2x lines, noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FS)
    t = np.arange(n) / FS
    fr = rpm / 60
    bpfo = 3.5848 * fr * 1.01  # 1 % slip
    x = 0.3 * np.sin(2 * np.pi * fr * t) + 0.1 * np.sin(2 * np.pi * 2 * fr * t)
    impacts = np.zeros(n)
    impacts[(np.arange(0, seconds * bpfo) / bpfo * FS).astype(int)] = 1.0
    ring = np.exp(-900 * t[:200]) * np.sin(2 * np.pi * 3200 * t[:200])
    x += 2.0 * np.convolve(impacts, ring)[:n]
    return x + 0.3 * rng.standard_normal(n)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_once(
    blocks: list[np.ndarray], average_blocks: int, rpm: float = 1797.0
) -> tuple[float, float]:
    det = VibrationDetector(
        asset="bench",
        tag_id="bench.vib",
        geometry=BearingCatalogue.load().get("6205"),
        fixed_rpm=rpm,
        average_blocks=average_blocks,
    )
    waves = [Waveform("bench.vib", i * HOP / FS, FS, b) for i, b in enumerate(blocks)]
    for w in waves[:average_blocks]:  # warm-up round (imports, first kurtogram)
        det.update(w)
    t0 = time.process_time()
    for w in waves:
        det.update(w)
    pipeline = time.process_time() - t0
    t0 = time.process_time()
    for b in blocks:
        np.fft.rfft(b)
    bare = time.process_time() - t0
    return len(blocks) / pipeline, len(blocks) / bare


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=128, help="timed blocks per run")
    parser.add_argument("--average-blocks", type=int, default=64)
    parser.add_argument("--rpm", type=float, default=1797.0, help="shaft speed of the signal")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.blocks % args.average_blocks:
        parser.error("--blocks must be a multiple of --average-blocks (whole rounds)")
    x = outer_race_signal(((args.blocks - 1) * HOP + BLOCK) / FS, args.rpm)
    blocks = [x[i : i + BLOCK].copy() for i in range(0, x.size - BLOCK + 1, HOP)][: args.blocks]
    rows: list[tuple[str, float]] = []
    ratios: list[tuple[str, float]] = []
    bare_rates: list[float] = []
    assembled = BLOCK * args.rpm / 60 / FS < MIN_REVOLUTIONS_PER_BLOCK
    if assembled:
        print(
            f"{BLOCK} samples hold {BLOCK * args.rpm / 60 / FS:.1f} revolutions at "
            f"{args.rpm:g} rpm: blocks assembled into windows of "
            f"{window_length(FS, args.rpm / 60)} samples"
        )
    for k in (1,) if assembled else (1, args.average_blocks):
        runs = [run_once(blocks, k, args.rpm) for _ in range(args.repeats)]
        pipe = statistics.median(r[0] for r in runs)
        bare = statistics.median(r[1] for r in runs)
        bare_rates.append(bare)
        rows.append((f"pipeline, average_blocks={k}", pipe))
        ratios.append((f"pipeline (average_blocks={k}) / bare", pipe / bare))
    print(
        f"machine: {os.cpu_count()} cpus, {cpu_model()}; numpy {np.__version__}; "
        f"{len(blocks)} blocks x {args.repeats} runs (median)"
    )
    print(f"{'path':<38}{'blocks/s':>10}{'ms/block':>10}{'channels/core':>15}")
    rows.append(("bare numpy rfft", statistics.median(bare_rates)))
    for label, rate in rows:
        print(f"{label:<38}{rate:>10.0f}{1000 / rate:>10.3f}{rate / BLOCKS_PER_CHANNEL_S:>15.0f}")
    for label, ratio in ratios:
        print(f"{label:<38}{ratio:>10.2f}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run_once, blocks, 1 if assembled else args.average_blocks, args.rpm)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
