"""Synthetic rotating machines: acceleration blocks with injectable, growing faults.

A `VibrationMachine` is a shaft turning at a slowly wandering speed on one rolling bearing,
seen by an accelerometer on the bearing housing. Each `next_block()` returns the next block of
acceleration in g. What it contains, following the usual fault signatures (Randall & Antoni,
MSSP 25 (2011) 485-520; Scheffer & Girdhar, "Practical Machinery Vibration Analysis", ch. 5):

- healthy running: a small 1x and 2x (residual unbalance and alignment), white sensor noise and
  broadband noise coloured by the housing's structural resonance;
- `unbalance`: 1x; `misalignment`: 2x dominant with 1x and 3x; `looseness`: a long series of
  running-speed harmonics with half orders. Severity 1 gives `FULL_SCALE_VELOCITY_MM_S` of
  velocity RMS, the ISO 10816-3 quantity, so growth walks the machine through the zones;
- bearing defects: short impacts that ring the structural resonance (a decaying sine), repeated
  at the defect frequency of the bearing geometry -- BPFO (constant amplitude: the outer race
  does not move through the load zone), BPFI (amplitude modulated by shaft rotation as the
  defect passes the load zone), 2 x BSF (a ball strikes both races, alternately, and the cage
  carries it through the load zone at FTF), FTF (a cage pocket striking once per cage turn).
  Impact spacing wanders randomly by `SLIP_JITTER` per impact on top of a mean slip of
  `MEAN_SLIP` (real bearings do not roll purely). Severity 1 gives impacts of
  `FULL_SCALE_IMPACT_G` peak acceleration on the outer race; impacts from the inner race and
  the balls travel a longer path and arrive weaker (`_PATH_GAIN`).

Severity is a number from 0 (absent) to 1 (well developed; larger values are allowed), so one
growth rate reads the same for every fault. Everything random comes from one seeded generator:
the same seed and the same calls give the same blocks.

The defect frequencies follow the standard kinematics (same formulas as
`detectors.vibration.bearing`, which a test cross-checks). They are computed here rather than
imported, so the simulator does not load the detector family (and scipy with it); any object
with the four geometry attributes of `BearingDimensions` -- such as a `BearingGeometry` from
the bearing catalogue -- can be passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gateway.core.records import FaultCode

FloatArray = npt.NDArray[np.float64]

G_IN_MM_S2 = 9806.65
MACHINE_FAULTS = (FaultCode.UNBALANCE, FaultCode.MISALIGNMENT, FaultCode.LOOSENESS)
BEARING_FAULTS = (
    FaultCode.BEARING_OUTER_RACE,
    FaultCode.BEARING_INNER_RACE,
    FaultCode.BEARING_ROLLING_ELEMENT,
    FaultCode.BEARING_CAGE,
)
SIMULATED_FAULTS = MACHINE_FAULTS + BEARING_FAULTS

FULL_SCALE_VELOCITY_MM_S = 10.0  # zone D for medium and large machines on rigid foundations
FULL_SCALE_IMPACT_G = 5.0
MEAN_SLIP = 0.01  # rolling elements lag pure rolling by 1-2 %
SLIP_JITTER = 0.01  # random variation of each impact spacing (relative)
IMPACT_SPREAD = 0.2  # impact-to-impact amplitude variation (relative)
LOAD_ZONE_DEPTH = 0.8  # amplitude lost when the defect is out of the load zone
SPEED_WANDER = 0.002  # relative, a mains-fed induction motor under a varying load

# Velocity RMS of each line relative to the fault's own overall velocity, by shaft order.
_ORDER_PROFILES: dict[FaultCode, dict[float, float]] = {
    FaultCode.UNBALANCE: {1.0: 1.0},
    FaultCode.MISALIGNMENT: {1.0: 0.5, 2.0: 1.0, 3.0: 0.35},
    # Rotating looseness: a comb of harmonics to 10x with half orders, 1x still the largest.
    FaultCode.LOOSENESS: {
        0.5: 0.3, 1.0: 1.0, 1.5: 0.35, 2.0: 0.35, 2.5: 0.3, 3.0: 0.55, 4.0: 0.5,
        5.0: 0.45, 6.0: 0.4, 7.0: 0.35, 8.0: 0.3, 9.0: 0.25, 10.0: 0.2,
    },
}  # fmt: skip
_HEALTHY_ORDERS_MM_S = {1.0: 0.45, 2.0: 0.15}
# Impacts from the rotating inner race and the balls cross more interfaces to the sensor.
_PATH_GAIN = {
    FaultCode.BEARING_OUTER_RACE: 1.0,
    FaultCode.BEARING_INNER_RACE: 0.6,
    FaultCode.BEARING_ROLLING_ELEMENT: 0.5,
    FaultCode.BEARING_CAGE: 0.5,
}


class BearingDimensions(Protocol):
    """What the simulator needs of a bearing; `BearingGeometry` of the catalogue fits."""

    @property
    def balls(self) -> int: ...

    @property
    def ball_diameter(self) -> float: ...

    @property
    def pitch_diameter(self) -> float: ...

    @property
    def contact_angle_deg(self) -> float: ...


@dataclass(frozen=True, slots=True)
class DefectOrders:
    """Defect frequencies per Hz of shaft rotation (outer race fixed, pure rolling)."""

    bpfo: float
    bpfi: float
    ftf: float
    bsf: float

    @classmethod
    def of(cls, bearing: BearingDimensions) -> DefectOrders:
        r = bearing.ball_diameter / bearing.pitch_diameter
        r *= math.cos(math.radians(bearing.contact_angle_deg))
        n = bearing.balls
        return cls(
            bpfo=n / 2 * (1 - r),
            bpfi=n / 2 * (1 + r),
            ftf=0.5 * (1 - r),
            bsf=bearing.pitch_diameter / (2 * bearing.ball_diameter) * (1 - r * r),
        )


@dataclass(frozen=True, slots=True)
class Resonance:
    """The housing mode bearing impacts ring: a decaying sine."""

    freq_hz: float = 3000.0
    damping_ratio: float = 0.03

    @property
    def decay_per_s(self) -> float:
        return 2 * math.pi * self.freq_hz * self.damping_ratio

    @property
    def ring_s(self) -> float:
        """Time for a ring to fall below 0.1 % of its start (7 time constants)."""
        return 7.0 / self.decay_per_s


@dataclass(frozen=True, slots=True)
class _Growth:
    start_s: float
    initial: float
    per_s: float
    limit: float

    def at(self, t: float) -> float:
        if t < self.start_s:
            return 0.0
        return min(self.limit, self.initial + self.per_s * (t - self.start_s))


class _Shaft:
    """Shaft speed with a slow, smooth wander; its turns are known in closed form."""

    def __init__(self, shaft_hz: float, rng: np.random.Generator) -> None:
        self.nominal_hz = shaft_hz
        # Three slow components (8-60 s) whose amplitudes add up to SPEED_WANDER.
        self._freqs = rng.uniform(1 / 60, 1 / 8, 3)
        weights = rng.uniform(0.5, 1.0, 3)
        self._amps = SPEED_WANDER * weights / weights.sum()
        self._phases = rng.uniform(0, 2 * np.pi, 3)

    def hz(self, t: FloatArray | float) -> FloatArray:
        tt = np.asarray(t, dtype=np.float64)[..., None]
        wander = np.sum(self._amps * np.sin(2 * np.pi * self._freqs * tt + self._phases), axis=-1)
        return np.asarray(self.nominal_hz * (1.0 + wander), dtype=np.float64)

    def turns(self, t: FloatArray | float) -> FloatArray:
        """Revolutions since t = 0 (the integral of `hz`)."""
        tt = np.asarray(t, dtype=np.float64)[..., None]
        ripple = self._amps / (2 * np.pi * self._freqs)
        cos = np.cos(2 * np.pi * self._freqs * tt + self._phases) - np.cos(self._phases)
        return np.asarray(self.nominal_hz * (tt[..., 0] - np.sum(ripple * cos, axis=-1)))


class _ImpactTrain:
    """Impact times and amplitudes of one bearing defect, continuous across blocks."""

    def __init__(self, code: FaultCode, orders: DefectOrders) -> None:
        self.code = code
        self.rate = {
            FaultCode.BEARING_OUTER_RACE: orders.bpfo,
            FaultCode.BEARING_INNER_RACE: orders.bpfi,
            FaultCode.BEARING_ROLLING_ELEMENT: 2 * orders.bsf,  # both races struck per spin
            FaultCode.BEARING_CAGE: orders.ftf,
        }[code] * (1 - MEAN_SLIP)
        self.cage_order = orders.ftf * (1 - MEAN_SLIP)
        self._next_s: float | None = None
        self._count = 0
        self._tail: list[tuple[float, float]] = []  # impacts still ringing into the next block

    def reset(self) -> None:
        self._next_s = None
        self._tail = []

    def impacts(
        self,
        t0: float,
        t1: float,
        ring_s: float,
        shaft: _Shaft,
        severity: _Severity,
        rng: np.random.Generator,
    ) -> tuple[FloatArray, FloatArray]:
        """(times, peak amplitudes in g) of the impacts heard in [t0, t1)."""
        if self._next_s is None:
            # A defect that appears (or a block after a gap) starts at a random phase.
            self._next_s = t0 + rng.uniform(0, 1) / (self.rate * shaft.nominal_hz)
        times: list[float] = []
        while self._next_s < t1:
            times.append(self._next_s)
            period = 1.0 / (self.rate * float(shaft.hz(self._next_s)))
            self._next_s += period * (1.0 + rng.normal(0.0, SLIP_JITTER))
        new_t = np.asarray(times, dtype=np.float64)
        new_a = self._amplitudes(new_t, shaft, severity, rng)
        old_t = np.asarray([t for t, _ in self._tail], dtype=np.float64)
        old_a = np.asarray([a for _, a in self._tail], dtype=np.float64)
        self._tail = [(t, a) for t, a in zip(times, new_a, strict=True) if t >= t1 - ring_s]
        return np.concatenate([old_t, new_t]), np.concatenate([old_a, new_a])

    def _amplitudes(
        self, times: FloatArray, shaft: _Shaft, severity: _Severity, rng: np.random.Generator
    ) -> FloatArray:
        level = np.asarray([severity(self.code, float(t)) for t in times], dtype=np.float64)
        amps = level * FULL_SCALE_IMPACT_G * _PATH_GAIN[self.code]
        amps = amps * (1.0 + IMPACT_SPREAD * rng.uniform(-1, 1, times.size))
        if self.code is FaultCode.BEARING_INNER_RACE:
            amps = amps * _load_zone(2 * np.pi * shaft.turns(times))
        elif self.code is FaultCode.BEARING_ROLLING_ELEMENT:
            amps = amps * _load_zone(2 * np.pi * self.cage_order * shaft.turns(times))
            # Alternate strikes on the inner race arrive weaker than those on the outer race.
            index = self._count + np.arange(times.size)
            amps = amps * np.where(index % 2 == 0, 1.0, 0.6)
        self._count += times.size
        return np.asarray(amps, dtype=np.float64)


def _load_zone(angle: FloatArray) -> FloatArray:
    """Impact strength as a defect rotates through the load zone (full at angle 0)."""
    return np.asarray(1.0 - LOAD_ZONE_DEPTH * 0.5 * (1.0 - np.cos(angle)), dtype=np.float64)


class _Severity(Protocol):
    def __call__(self, code: FaultCode, t: float) -> float: ...


class VibrationMachine:
    """Acceleration (g) of one bearing housing of a rotating machine, block after block.

    `t` is the machine's own time in seconds (0 at creation); blocks without an explicit `t`
    follow each other without gaps. Faults are set with `set_fault` (constant severity) or
    `set_growth` (appearing at `start_s` and growing linearly up to `limit`).
    """

    def __init__(
        self,
        sample_rate: float,
        block_size: int,
        shaft_hz: float,
        geometry: BearingDimensions,
        seed: int = 0,
        *,
        noise_g: float = 0.01,
        resonance: Resonance | None = None,
    ) -> None:
        if sample_rate <= 0 or block_size < 2 or shaft_hz <= 0:
            raise ValueError(
                f"need a positive sample rate, block size and shaft speed, got {sample_rate} Hz, "
                f"{block_size} samples, {shaft_hz} Hz"
            )
        self.sample_rate = float(sample_rate)
        self.block_size = int(block_size)
        self.orders = DefectOrders.of(geometry)
        self.resonance = resonance or Resonance()
        if self.resonance.freq_hz >= self.sample_rate / 2:
            raise ValueError(
                f"resonance at {self.resonance.freq_hz:g} Hz is above the Nyquist frequency of "
                f"{self.sample_rate:g} Hz"
            )
        self.noise_g = noise_g
        self._rng = np.random.default_rng(seed)
        self._shaft = _Shaft(shaft_hz, self._rng)
        self._line_phases: dict[FaultCode | None, dict[float, float]] = {
            code: {order: float(self._rng.uniform(0, 2 * np.pi)) for order in profile}
            for code, profile in [(None, _HEALTHY_ORDERS_MM_S), *_ORDER_PROFILES.items()]
        }
        self._growth: dict[FaultCode, _Growth] = {}
        self._trains: dict[FaultCode, _ImpactTrain] = {}
        self._resonance_shape = self._coloured_noise_shape()
        self._next_t = 0.0
        self.speed_hz = shaft_hz  # mean shaft speed over the last block (a tachometer)

    # -- faults -----------------------------------------------------------------------------

    def set_fault(self, code: FaultCode | str, severity: float) -> None:
        """A fault present from now on at a constant severity (0 removes it)."""
        self.set_growth(code, start_s=-math.inf, per_hour=0.0, initial=severity, limit=severity)

    def set_growth(
        self,
        code: FaultCode | str,
        *,
        start_s: float,
        per_hour: float,
        initial: float = 0.0,
        limit: float = 1.0,
    ) -> None:
        """A fault appearing at machine time `start_s` with severity `initial`, then growing by
        `per_hour` per hour of machine time up to `limit`."""
        fault = FaultCode(code)
        if fault not in SIMULATED_FAULTS:
            raise ValueError(f"fault `{code}` is not simulated (known: {list(SIMULATED_FAULTS)})")
        if initial < 0 or limit < 0 or per_hour < 0:
            raise ValueError(f"fault `{code}`: severities and growth must not be negative")
        self._growth[fault] = _Growth(start_s, initial, per_hour / 3600.0, limit)
        if fault in BEARING_FAULTS and fault not in self._trains:
            self._trains[fault] = _ImpactTrain(fault, self.orders)

    def clear_fault(self, code: FaultCode | str) -> None:
        """The fault repaired: gone from the next block."""
        fault = FaultCode(code)
        self._growth.pop(fault, None)
        self._trains.pop(fault, None)

    def severity(self, code: FaultCode | str, t: float) -> float:
        growth = self._growth.get(FaultCode(code))
        return 0.0 if growth is None else growth.at(t)

    # -- blocks -----------------------------------------------------------------------------

    @property
    def block_seconds(self) -> float:
        return self.block_size / self.sample_rate

    @property
    def next_t(self) -> float:
        """Start time of the block `next_block()` returns without an explicit `t`."""
        return self._next_t

    def next_block(self, t: float | None = None) -> FloatArray:
        """The block of acceleration (g) starting at machine time `t` (default: right after the
        previous block). Sets `speed_hz` to the block's mean shaft speed."""
        t0 = self._next_t if t is None else float(t)
        if not math.isclose(t0, self._next_t, abs_tol=0.5 / self.sample_rate):
            for train in self._trains.values():
                train.reset()  # a gap: impacts start afresh
        n = self.block_size
        t1 = t0 + n / self.sample_rate
        times = t0 + np.arange(n) / self.sample_rate
        turns = self._shaft.turns(times)
        x = self._noise()
        x += self._order_lines(turns, None, 1.0, t0)
        for code in MACHINE_FAULTS:
            level = self.severity(code, t0)
            if level > 0:
                x += self._order_lines(turns, code, level * FULL_SCALE_VELOCITY_MM_S, t0)
        for train in self._trains.values():
            x += self._rings(train, t0, t1)
        self.speed_hz = float((self._shaft.turns(t1) - self._shaft.turns(t0)) / (t1 - t0))
        self._next_t = t1
        return x

    # -- components -------------------------------------------------------------------------

    def _order_lines(
        self, turns: FloatArray, code: FaultCode | None, scale: float, t0: float
    ) -> FloatArray:
        """Sum of shaft-order sines; `scale` is mm/s (a fault's overall velocity RMS) or 1 for
        the healthy profile already in mm/s."""
        profile = _HEALTHY_ORDERS_MM_S if code is None else _ORDER_PROFILES[code]
        norm = 1.0 if code is None else math.sqrt(sum(v * v for v in profile.values()))
        shaft_hz = float(self._shaft.hz(t0))
        out = np.zeros(turns.size)
        for order, rel in profile.items():
            velocity_rms = scale * rel / norm
            freq = order * shaft_hz
            accel_peak_g = velocity_rms * math.sqrt(2) * 2 * math.pi * freq / G_IN_MM_S2
            phase = self._line_phases[code][order]
            out += accel_peak_g * np.sin(2 * np.pi * order * turns + phase)
        return out

    def _coloured_noise_shape(self) -> FloatArray:
        """rFFT gain of the structural resonance, scaled to unit RMS on white noise."""
        f = np.fft.rfftfreq(self.block_size, 1.0 / self.sample_rate) / self.resonance.freq_hz
        zeta = self.resonance.damping_ratio
        gain = 1.0 / np.sqrt((1 - f * f) ** 2 + (2 * zeta * f) ** 2)
        return np.asarray(gain / np.sqrt(np.mean(gain * gain)), dtype=np.float64)

    def _noise(self) -> FloatArray:
        """White sensor noise plus broadband machine noise through the housing resonance (equal
        RMS). Shaping white noise in the frequency domain gives a stationary block directly."""
        n = self.block_size
        white = self.noise_g * self._rng.standard_normal(n)
        spectrum = np.fft.rfft(self._rng.standard_normal(n)) * self._resonance_shape
        return white + self.noise_g * np.fft.irfft(spectrum, n)

    def _rings(self, train: _ImpactTrain, t0: float, t1: float) -> FloatArray:
        res = self.resonance
        times, amps = train.impacts(t0, t1, res.ring_s, self._shaft, self.severity, self._rng)
        n = self.block_size
        if times.size == 0:
            return np.zeros(n)
        fs = self.sample_rate
        length = math.ceil(res.ring_s * fs) + 1
        # Each ring is sampled at its exact (sub-sample) start, so spacing jitter is not
        # rounded to the sample grid.
        first = np.ceil((times - t0) * fs).astype(np.int64)
        index = first[:, None] + np.arange(length)
        since = index / fs - (times - t0)[:, None]
        omega = 2 * np.pi * res.freq_hz * math.sqrt(1 - res.damping_ratio**2)
        ring = amps[:, None] * np.exp(-res.decay_per_s * since) * np.sin(omega * since)
        inside = (index >= 0) & (index < n)
        return np.bincount(index[inside], weights=ring[inside], minlength=n).astype(np.float64)


@dataclass(frozen=True, slots=True)
class FaultScenario:
    """Healthy for `healthy_s`, then a fault appears at `onset_severity` and grows by
    `per_hour` up to `limit`. The demo's default: an outer-race defect."""

    healthy_s: float = 60.0
    fault: FaultCode = FaultCode.BEARING_OUTER_RACE
    onset_severity: float = 0.05
    per_hour: float = 1.0
    limit: float = 1.0

    def apply(self, machine: VibrationMachine) -> VibrationMachine:
        machine.set_growth(
            self.fault,
            start_s=self.healthy_s,
            per_hour=self.per_hour,
            initial=self.onset_severity,
            limit=self.limit,
        )
        return machine

    def severity_at(self, t: float) -> float:
        if t < self.healthy_s:
            return 0.0
        return min(self.limit, self.onset_severity + self.per_hour * (t - self.healthy_s) / 3600)
