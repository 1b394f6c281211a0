"""Refuse input that cannot be diagnosed honestly, naming the problem."""

from __future__ import annotations

import math

import numpy as np

from detectors.vibration.errors import BadSignal
from detectors.vibration.spectrum import FloatArray

MIN_SAMPLES = 1024
# A healthy record reaches its extreme value once or a few times; a clipped one sits there.
CLIP_MIN_SAMPLES = 10
CLIP_MIN_FRACTION = 1e-3
MIN_REVOLUTIONS_PER_BLOCK = 8  # shaft sidebands (+-fr) need several bins between them
TARGET_REVOLUTIONS_PER_BLOCK = 32


def check_signal(signal: FloatArray, fs: float) -> tuple[float, float]:
    """Raise `BadSignal` naming the problem; return the signal's (min, max) for reuse."""
    if not math.isfinite(fs) or fs <= 0:
        raise BadSignal(f"sample rate {fs} Hz is not a positive number")
    if signal.ndim != 1:
        raise BadSignal(f"expected one channel, got an array of shape {signal.shape}")
    if signal.size < MIN_SAMPLES:
        raise BadSignal(f"block too short: {signal.size} samples, need at least {MIN_SAMPLES}")
    lo, hi = float(signal.min()), float(signal.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN and inf propagate to min/max
        bad = ~np.isfinite(signal)
        first = int(np.flatnonzero(bad)[0])
        raise BadSignal(
            f"signal holds {int(bad.sum())} NaN or infinite samples (first at index {first})"
        )
    if hi - lo <= 0:
        raise BadSignal(f"signal is flat (every sample is {lo}): sensor or cable fault")
    span = hi - lo
    eps = 1e-9 * span
    for edge, name, near in ((hi, "upper", signal >= hi - eps), (lo, "lower", signal <= lo + eps)):
        at_edge = int(np.count_nonzero(near))
        if at_edge >= max(CLIP_MIN_SAMPLES, CLIP_MIN_FRACTION * signal.size):
            raise BadSignal(
                f"signal looks clipped: {at_edge} samples sit at the {name} limit {edge:g} "
                "(sensor or input range saturated)"
            )
    return lo, hi


def block_length(n_samples: int, fs: float, shaft_hz: float) -> int:
    """Power-of-two block holding about 32 shaft revolutions, or as many as the record allows.

    32 revolutions give a resolution of fr/32: defect lines and their +-fr sidebands are
    cleanly separated. Fewer than 8 revolutions cannot separate them, so that is refused.
    """
    wanted = 2 ** math.ceil(math.log2(TARGET_REVOLUTIONS_PER_BLOCK * fs / shaft_hz))
    available = 2 ** math.floor(math.log2(n_samples))
    n = min(wanted, available)
    revolutions = n * shaft_hz / fs
    if revolutions < MIN_REVOLUTIONS_PER_BLOCK:
        raise BadSignal(
            f"block too short for the speed: {n_samples} samples at {fs:g} Hz hold "
            f"{n_samples * shaft_hz / fs:.1f} revolutions at {shaft_hz * 60:.0f} rpm; "
            f"need at least {MIN_REVOLUTIONS_PER_BLOCK}"
        )
    return n


def split_blocks(signal: FloatArray, n: int, overlap: float = 0.5) -> FloatArray:
    """(blocks, n) view with the given overlap; the tail shorter than a block is dropped."""
    step = max(1, int(n * (1 - overlap)))
    count = 1 + (signal.size - n) // step
    windows = np.lib.stride_tricks.sliding_window_view(signal, n)[::step][:count]
    return np.ascontiguousarray(windows)
