"""Analysis windows assembled from contiguous live blocks of one channel.

A block that holds fewer revolutions than the diagnosis needs (16384 samples at 51.2 kHz are
3.2-6.4 revolutions at 600-1200 rpm) cannot resolve a defect line from its shaft-rate
sidebands. `analyze` cuts a whole record into blocks of `window_length` samples (the power of
two holding at least 32 revolutions); the live detector gathers consecutive blocks of the same
tag into a window of that length and diagnoses it the same way.

Samples are only joined where the blocks' timestamps say they follow each other: a block
stamped with its first sample starts where the last one ended (within half a sample), or
earlier by whole samples it repeats (half-overlapping blocks), in which case the repeated
samples are checked against those held and only the new ones are added, so no sample is
counted twice. A gap, a block that goes back in time, repeated samples that differ from those
held (the stamps do not describe the samples) or a change of sample rate restarts the
assembly: a spliced window would smear every line in it. Blocks stamped with the time they
were polled rather than by their first sample do not pass this check; they are left
unassembled (a miss), never joined on a guess.

Windows advance by half their length, as `analyze`'s blocks do (50 % overlap); confirmation
counts only windows of separate data (detector.py). Memory: one window per channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detectors.vibration.checks import MIN_REVOLUTIONS_PER_BLOCK, TARGET_REVOLUTIONS_PER_BLOCK
from detectors.vibration.spectrum import FloatArray

# Timestamps are float seconds: a contiguous block's computed offset is a whole number of
# samples up to rounding; anything further than half a sample from one is not the same clock.
SAMPLE_TOLERANCE = 0.5


def window_length(fs: float, shaft_hz: float, current: int = 0, hysteresis: float = 0.03) -> int:
    """Samples in an analysis window: the power of two holding at least 32 revolutions, the
    length `analyze` uses for a record long enough (checks.block_length). `current` is kept
    while the speed moves within `hysteresis` of the range it serves, so a speed read near a
    boundary does not restart the assembly on every block."""
    if current:
        revolutions = current * shaft_hz / fs
        low = TARGET_REVOLUTIONS_PER_BLOCK * (1.0 - hysteresis)
        if low <= revolutions < 2 * TARGET_REVOLUTIONS_PER_BLOCK * (1.0 + hysteresis):
            return current
    return int(2 ** math.ceil(math.log2(TARGET_REVOLUTIONS_PER_BLOCK * fs / shaft_hz)))


@dataclass(frozen=True, slots=True)
class Window:
    start: float  # timestamp of its first sample
    samples: FloatArray


class WindowAssembler:
    """Gathers the samples of contiguous blocks into windows of `n`, advancing by `n // 2`."""

    def __init__(self) -> None:
        self.interruption: str | None = None  # why the last restart happened, until a window
        self.reset()

    def reset(self) -> None:
        """Forget the held samples (a bad block, or blocks that no longer need assembling)."""
        self.fs = 0.0
        self.n = 0
        self._buffer: FloatArray | None = None
        self._held = 0
        self._anchor = 0.0  # timestamp of the first sample since the restart
        self._appended = 0  # samples appended since the restart
        self._dropped = 0  # samples shifted out of the buffer since the restart

    @property
    def held(self) -> int:
        return self._held

    def add(self, ts: float, data: FloatArray, fs: float, n: int) -> list[Window]:
        """Add a block whose first sample is at `ts`; the windows it completes, oldest first."""
        if self._buffer is None or fs != self.fs or n != self.n:
            if self._buffer is not None:
                self.interruption = (
                    f"sample rate changed ({self.fs:g} -> {fs:g} Hz)"
                    if fs != self.fs
                    else f"window length changed ({self.n} -> {n} samples: the speed changed)"
                )
            return self._restart(ts, data, fs, n)
        expected = self._anchor + self._appended / fs
        offset = (ts - expected) * fs  # in samples; negative: the block repeats held samples
        whole = round(offset)
        if abs(offset - whole) > SAMPLE_TOLERANCE or whole > 0:
            self.interruption = (
                f"a block starts {offset / fs * 1e3:+.3f} ms from the end of the last one "
                f"({offset:+.1f} samples): not contiguous, window assembly restarted (a "
                f"{data.size}-sample block is too short to be diagnosed alone: configure "
                f"blocks of at least {MIN_REVOLUTIONS_PER_BLOCK} revolutions, or stamp each block "
                "with the time of its first sample)"
            )
            return self._restart(ts, data, fs, n)
        repeated = -whole
        if repeated:
            if repeated > self._held or not np.array_equal(
                data[: min(repeated, data.size)],
                self._held_tail(repeated)[: min(repeated, data.size)],
            ):
                self.interruption = (
                    f"a block stamped {repeated} samples before the end of the last one does "
                    "not repeat the samples held: window assembly restarted"
                )
                return self._restart(ts, data, fs, n)
            if repeated >= data.size:
                return []  # nothing new: the same samples again
        return self._append(data[repeated:])

    def _held_tail(self, count: int) -> FloatArray:
        assert self._buffer is not None
        return self._buffer[self._held - count : self._held]

    def _restart(self, ts: float, data: FloatArray, fs: float, n: int) -> list[Window]:
        self.reset()
        self.fs, self.n = fs, n
        self._buffer = np.empty(n)
        self._anchor = ts
        return self._append(data)

    def _append(self, new: FloatArray) -> list[Window]:
        assert self._buffer is not None
        out: list[Window] = []
        n, hop = self.n, self.n // 2
        pos = 0
        while pos < new.size:
            take = min(n - self._held, new.size - pos)
            self._buffer[self._held : self._held + take] = new[pos : pos + take]
            self._held += take
            self._appended += take
            pos += take
            if self._held == n:
                start = self._anchor + self._dropped / self.fs
                out.append(Window(start, self._buffer.copy()))
                self._buffer[: n - hop] = self._buffer[hop:]
                self._held = n - hop
                self._dropped += hop
                self.interruption = None
        return out
