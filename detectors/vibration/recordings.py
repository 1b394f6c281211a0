"""Readers for recorded vibration files: `.mat`, `.npz`, `.npy`, `.wav`, `.csv`, IMS ASCII.

Each reader returns one channel in g plus what the file tells about itself (sample rate,
speed, bearing); what the file does not tell stays None so the caller can ask for it. How the
defaults are found, per layout:

- CWRU `.mat` (`X<rec>_DE_time`, `_FE_time`, `_BA_time`, `X<rec>RPM`): the sample rate is not
  stored. Files named `48k_*` and the normal-baseline records 97-100 (which CWRU sampled at
  48 kHz; Smith & Randall 2015, Table A1) are 48 kHz; every other record 12 kHz. The speed is
  `X<rec>RPM`; the 0.028 in files have none, so it comes from the load in the file name
  (`_<hp>_`: 0/1/2/3 hp -> 1797/1772/1750/1730 rpm, CWRU's nominal speeds). Bearing: SKF 6205
  for the drive end (DE, also the base plate BA), SKF 6203 for the fan end (FE).
- MFPT `.mat` (struct `bearing` with `gs`, `sr`, `rate`): rate and speed from the struct, NICE
  bearing.
- IMS ASCII (no extension, 20480 rows of 8 or 4 tab-separated columns): 20480 Hz, 2000 rpm,
  Rexnord ZA-2115; channels `1`..`8` (bearing 1 x, y; bearing 2 x, y; ...).
- any other `.mat` and `.npz`: one numeric vector, or the variable `--channel` names (a 2-D
  variable's columns as `NAME:INDEX`, from 0); the sample rate and speed come from scalar
  variables named like `fs` / `sample_rate` and `rpm` when the file has them (the excerpts in
  tests/data do), otherwise they must be given.
- `.wav` (handheld recorders): the sample rate is in the header; channels `1`..`N`; integer
  samples are read as fractions of full scale (the file stores no calibration: give `scale`).
- `.npy` (1-D, or 2-D with one column per channel) and `.csv` (optional header row naming the
  columns): nothing is known; the sample rate must be given.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import scipy.io.wavfile

from detectors.vibration.checks import MIN_SAMPLES
from detectors.vibration.errors import BadSignal
from detectors.vibration.spectrum import FloatArray

CWRU_NOMINAL_RPM_BY_LOAD_HP = {0: 1797.0, 1: 1772.0, 2: 1750.0, 3: 1730.0}
CWRU_48K_NORMAL_RECORDS = {97, 98, 99, 100}
IMS_FS_HZ = 20480.0
IMS_RPM = 2000.0
FS_NAMES = ("fs", "fs_hz", "sample_rate", "sample_rate_hz", "sr", "samplerate")
RPM_NAMES = ("rpm", "speed_rpm")


@dataclass(frozen=True)
class Recording:
    signal: FloatArray  # one channel, in g
    channel: str
    layout: str  # cwru | mfpt | mat | npz | wav | ims | npy | csv | text
    fs: float | None
    rpm: float | None
    bearing: str | None
    channels: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def read_recording(path: Path, channel: str | None = None) -> Recording:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return _read_mat(path, channel)
    if suffix == ".npz":
        return _read_npz(path, channel)
    if suffix == ".npy":
        return _read_npy(path, channel)
    if suffix == ".wav":
        return _read_wav(path, channel)
    if suffix in (".csv", ".txt") or suffix == "" or re.fullmatch(r"\.\d+", suffix):
        return _read_text(path, channel, suffix == ".csv")
    raise BadSignal(
        f"`{path.name}`: unknown file type `{suffix}` (expected .mat, .npz, .npy, .wav, .csv "
        "or an IMS ASCII snapshot)"
    )


def _column(data: FloatArray, index: int) -> FloatArray:
    return np.ascontiguousarray(data[:, index], dtype=np.float64)


def _pick(names: list[str], channel: str | None, default: str, path: Path) -> str:
    if channel is None:
        return default
    wanted = channel.lower()
    for name in names:
        if name.lower() == wanted:
            return name
    raise BadSignal(f"`{path.name}`: no channel `{channel}` (channels: {', '.join(names)})")


def _read_mat(path: Path, channel: str | None) -> Recording:
    try:
        mat: dict[str, Any] = scipy.io.loadmat(str(path))
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise BadSignal(f"`{path.name}`: not a readable MATLAB file ({exc})") from exc
    if "bearing" in mat and mat["bearing"].dtype.names:
        return _read_mfpt(path, mat["bearing"], channel)
    series = {k: v for k, v in mat.items() if re.fullmatch(r"X\d+_(DE|FE|BA)_time", k)}
    if not series:
        variables = {k: v for k, v in mat.items() if not k.startswith("__")}
        return _read_arrays(path, variables, channel, "mat")
    by_position = {k.split("_")[1]: k for k in series}
    names = sorted(by_position)
    position = _pick(names, channel, "DE" if "DE" in by_position else names[0], path)
    key = by_position[position]
    record = int(re.findall(r"\d+", key)[0])
    notes: list[str] = []
    if path.name.lower().startswith("48k") or record in CWRU_48K_NORMAL_RECORDS:
        fs = 48000.0
        notes.append(f"sample rate 48 kHz: CWRU record {record} (normal baseline or 48k file)")
    else:
        fs = 12000.0
        notes.append("sample rate 12 kHz: CWRU 12k record (not stored in the file)")
    rpm_keys = [k for k in mat if re.fullmatch(r"X\d+RPM", k)]
    rpm: float | None = None
    if rpm_keys:
        rpm = float(np.asarray(mat[rpm_keys[0]]).ravel()[0])
    else:
        load = re.search(r"_(\d)_\d+\.mat$", path.name)
        if load and int(load.group(1)) in CWRU_NOMINAL_RPM_BY_LOAD_HP:
            rpm = CWRU_NOMINAL_RPM_BY_LOAD_HP[int(load.group(1))]
            notes.append(f"no RPM in the file: nominal {rpm:.0f} rpm for {load.group(1)} hp load")
    bearing = "SKF-6203" if position == "FE" else "SKF-6205"
    return Recording(
        signal=np.asarray(mat[key], dtype=np.float64).ravel(),
        channel=position,
        layout="cwru",
        fs=fs,
        rpm=rpm,
        bearing=bearing,
        channels=tuple(names),
        notes=notes,
    )


def _read_mfpt(path: Path, struct: Any, channel: str | None) -> Recording:
    try:
        gs = np.asarray(struct["gs"][0, 0], dtype=np.float64).ravel()
        sr = float(np.asarray(struct["sr"][0, 0]).ravel()[0])
        rate = float(np.asarray(struct["rate"][0, 0]).ravel()[0])
    except (KeyError, ValueError, IndexError) as exc:
        raise BadSignal(f"`{path.name}`: `bearing` struct without gs/sr/rate ({exc})") from exc
    _pick(["gs"], channel, "gs", path)
    return Recording(
        signal=gs,
        channel="gs",
        layout="mfpt",
        fs=sr,
        rpm=rate * 60.0,
        bearing="MFPT-NICE",
        channels=("gs",),
        notes=["sample rate and shaft rate from the MFPT `bearing` struct"],
    )


def _read_npz(path: Path, channel: str | None) -> Recording:
    try:
        with np.load(path, allow_pickle=False) as z:
            variables = {name: np.asarray(z[name]) for name in z.files}
    except (ValueError, OSError) as exc:
        raise BadSignal(f"`{path.name}`: not a readable .npz archive ({exc})") from exc
    return _read_arrays(path, variables, channel, "npz")


def _numeric(value: Any) -> np.ndarray | None:
    array = np.asarray(value)
    return array if array.dtype.kind in "fiu" else None


def _scalar(variables: dict[str, Any], names: tuple[str, ...]) -> tuple[str, float] | None:
    for key, value in variables.items():
        array = _numeric(value)
        if key.lower() in names and array is not None and array.size == 1:
            number = float(array.ravel()[0])
            if np.isfinite(number) and number > 0:
                return key, number
    return None


def _channels_of(variables: dict[str, Any]) -> dict[str, FloatArray]:
    """Every vector long enough to be a recording, and each column of 2-D variables."""
    out: dict[str, FloatArray] = {}
    for key, value in variables.items():
        array = _numeric(value)
        if array is None or array.size < MIN_SAMPLES:
            continue
        squeezed = np.squeeze(array)
        if squeezed.ndim == 1:
            out[key] = squeezed.astype(np.float64)
        elif squeezed.ndim == 2:
            columns = squeezed if squeezed.shape[0] >= squeezed.shape[1] else squeezed.T
            for i in range(columns.shape[1]):
                out[f"{key}:{i}"] = np.ascontiguousarray(columns[:, i], dtype=np.float64)
    return out


def _read_arrays(
    path: Path, variables: dict[str, Any], channel: str | None, layout: str
) -> Recording:
    """A `.mat` or `.npz` that is not a known layout: one numeric vector, or the named one."""
    channels = _channels_of(variables)
    if not channels:
        found = ", ".join(f"{k} {np.shape(v)}" for k, v in variables.items()) or "none"
        raise BadSignal(
            f"`{path.name}`: no recognisable channel: no numeric vector of at least "
            f"{MIN_SAMPLES} samples (found variables: {found})"
        )
    names = list(channels)
    if channel is None and len(names) > 1:
        raise BadSignal(
            f"`{path.name}`: {len(names)} channels ({', '.join(names)}); name one with --channel"
        )
    name = _pick(names, channel, names[0], path)
    notes: list[str] = []
    fs = _scalar(variables, FS_NAMES)
    rpm = _scalar(variables, RPM_NAMES)
    if fs is not None:
        notes.append(f"sample rate {fs[1]:g} Hz from the file's `{fs[0]}`")
    if rpm is not None:
        notes.append(f"speed {rpm[1]:g} rpm from the file's `{rpm[0]}`")
    return Recording(
        signal=channels[name],
        channel=name,
        layout=layout,
        fs=None if fs is None else fs[1],
        rpm=None if rpm is None else rpm[1],
        bearing=None,
        channels=tuple(names),
        notes=notes,
    )


def _read_wav(path: Path, channel: str | None) -> Recording:
    try:
        rate, data = scipy.io.wavfile.read(path)
    except (ValueError, OSError) as exc:
        raise BadSignal(f"`{path.name}`: not a readable WAV file ({exc})") from exc
    if data.ndim == 1:
        data = data[:, None]
    names = [str(i + 1) for i in range(data.shape[1])]
    name = _pick(names, channel, "1", path)
    column = data[:, names.index(name)]
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        # Fractions of full scale; unsigned 8-bit PCM is centred on 128.
        offset = (int(info.max) + 1) // 2 if data.dtype.kind == "u" else 0
        signal = (column.astype(np.float64) - offset) / (float(info.max) - offset + 1)
    else:
        signal = column.astype(np.float64)
    return Recording(
        signal=signal,
        channel=name,
        layout="wav",
        fs=float(rate),
        rpm=None,
        bearing=None,
        channels=tuple(names),
        notes=[
            f"sample rate {rate} Hz from the WAV header; samples in fractions of full scale "
            "(no calibration in the file: levels are in g only with the right scale)"
        ],
    )


def _read_npy(path: Path, channel: str | None) -> Recording:
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise BadSignal(f"`{path.name}`: not a plain numeric .npy array ({exc})") from exc
    if data.dtype.kind not in "fiu":
        raise BadSignal(f"`{path.name}`: array of {data.dtype} is not numeric")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise BadSignal(f"`{path.name}`: expected 1-D or 2-D array, got shape {data.shape}")
    names = [str(i) for i in range(data.shape[1])]
    name = _pick(names, channel, "0", path)
    return Recording(
        signal=_column(data.astype(np.float64), int(name)),
        channel=name,
        layout="npy",
        fs=None,
        rpm=None,
        bearing=None,
        channels=tuple(names),
    )


def _read_text(path: Path, channel: str | None, is_csv: bool) -> Recording:
    with path.open(encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    delimiter = "," if "," in first else None
    header: list[str] | None = None
    if is_csv and any(ch.isalpha() for ch in first.replace("e", "").replace("E", "")):
        header = [h.strip() for h in next(csv.reader([first]))]
    try:
        data = np.loadtxt(path, delimiter=delimiter, skiprows=1 if header else 0, ndmin=2)
    except ValueError as exc:
        raise BadSignal(f"`{path.name}`: not a numeric table ({exc})") from exc
    names = (
        header
        if header and len(header) == data.shape[1]
        else [str(i + (0 if is_csv else 1)) for i in range(data.shape[1])]
    )
    is_ims = not is_csv and data.shape[0] == 20480 and data.shape[1] in (4, 8)
    default = names[0]
    name = _pick(names, channel, default, path)
    if is_ims:
        return Recording(
            signal=_column(data, names.index(name)),
            channel=name,
            layout="ims",
            fs=IMS_FS_HZ,
            rpm=IMS_RPM,
            bearing="REXNORD-ZA-2115",
            channels=tuple(names),
            notes=["IMS snapshot: 20480 Hz, 2000 rpm, Rexnord ZA-2115 (IMS readme)"],
        )
    return Recording(
        signal=_column(data, names.index(name)),
        channel=name,
        layout="csv" if is_csv else "text",
        fs=None,
        rpm=None,
        bearing=None,
        channels=tuple(names),
    )
