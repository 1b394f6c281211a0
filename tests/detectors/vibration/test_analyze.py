"""`edge-gateway analyze` body (gateway.cli.analyze.run) on vendored excerpts and bad input.

The excerpts in tests/data (README there) always run, even without ../shared/data.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from gateway.cli import analyze

from .recordings_support import EXCERPTS


def run_analyze(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    analyze.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = analyze.run(parser.parse_args(list(argv)), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def excerpt_as_npy(name: str, tmp_path: Path) -> tuple[Path, float, float]:
    with np.load(EXCERPTS / f"{name}.npz") as z:
        path = tmp_path / f"{name}.npy"
        np.save(path, z["signal"].astype(np.float64))
        return path, float(z["fs"]), float(z["rpm"])


@pytest.mark.parametrize(
    ("name", "bearing", "verdict"),
    [
        ("cwru_ir007_105_de", "6205", "bearing.inner_race"),
        ("cwru_or007_6_130_de", "6205", "bearing.outer_race"),
        ("cwru_normal_97_de", "6205", "normal"),
        ("mfpt_or_vload1", "NICE", "bearing.outer_race"),
        ("mfpt_ir_vload1", "NICE", "bearing.inner_race"),
        ("ims_20031022_120624_ch1", "ZA-2115", "normal"),
    ],
)
def test_verdict_on_vendored_excerpt(tmp_path: Path, name: str, bearing: str, verdict: str) -> None:
    path, fs, rpm = excerpt_as_npy(name, tmp_path)
    code, out, err = run_analyze(
        str(path), "--fs", str(fs), "--rpm", str(rpm), "--bearing", bearing, "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["verdict"] == verdict
    assert set(result) >= {"verdict", "faults", "features", "iso"}
    assert result["iso"]["zone"] in "ABCD"
    confidences = [f["confidence"] for f in result["faults"]]
    assert confidences == sorted(confidences, reverse=True)
    if verdict != "normal":
        ev = result["faults"][0]["evidence"]
        assert {"matched_hz", "harmonics", "snr_db", "expected_hz"} <= set(ev)


def test_readable_report_names_verdict_zone_and_matched_line(tmp_path: Path) -> None:
    path, fs, rpm = excerpt_as_npy("cwru_or007_6_130_de", tmp_path)
    code, out, _ = run_analyze(str(path), "--fs", str(fs), "--rpm", str(rpm), "--bearing", "6205")
    assert code == 0
    assert "Verdict   bearing.outer_race" in out
    assert "Matched line: BPFO at 107.7 Hz, 0.3 % above the kinematic 107.3 Hz" in out
    assert "zone A" in out


def test_csv_with_header_and_geometry_given_directly(tmp_path: Path) -> None:
    with np.load(EXCERPTS / "cwru_ir007_105_de.npz") as z:
        x = z["signal"].astype(np.float64)
    path = tmp_path / "rec.csv"
    np.savetxt(path, np.column_stack([x, x * 0]), delimiter=",", header="de,fe", comments="")
    code, out, err = run_analyze(
        str(path),
        "--fs",
        "12000",
        "--rpm",
        "1797",
        "--bearing",
        "9:7.94:39.04",
        "--channel",
        "de",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["verdict"] == "bearing.inner_race"


def test_cwru_mat_layout_defaults_are_read_from_the_file(tmp_path: Path) -> None:
    with np.load(EXCERPTS / "cwru_ir007_105_de.npz") as z:
        x = z["signal"].astype(np.float64)
    path = tmp_path / "12k_Drive_End_IR007_0_105.mat"
    scipy.io.savemat(path, {"X105_DE_time": x[:, None], "X105RPM": np.array([[1797.0]])})
    code, out, err = run_analyze(str(path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["analysis"]["fs_hz"], result["speed"]["rpm"], result["bearing"]) == (
        12000.0,
        1797.0,
        "SKF-6205",
    )
    assert result["verdict"] == "bearing.inner_race"


@pytest.mark.parametrize(
    ("make", "args", "code", "message"),
    [
        (lambda x: x, ["--rpm", "1797", "--bearing", "6205"], 65, "sample rate is not stored"),
        (lambda x: np.where(np.arange(x.size) == 7, np.nan, x), ["--fs", "12000"], 65, "NaN"),
        (lambda x: np.clip(x, -0.3, 0.3), ["--fs", "12000"], 65, "clipped"),
        (lambda x: x[:600], ["--fs", "12000"], 65, "too short"),
        (
            lambda x: x,
            ["--fs", "12000", "--rpm", "90000", "--bearing", "6205"],
            65,
            "bearing frequencies out of reach",
        ),
        (lambda x: x, ["--fs", "12000", "--bearing", "6999"], 2, "not in the catalogue"),
    ],
)
def test_bad_input_exits_non_zero_naming_the_problem(
    tmp_path: Path,
    make,
    args: list[str],
    code: int,
    message: str,
) -> None:
    with np.load(EXCERPTS / "cwru_ir007_105_de.npz") as z:
        x = z["signal"].astype(np.float64)
    path = tmp_path / "bad.npy"
    np.save(path, make(x))
    rc, out, err = run_analyze(str(path), *args, "--json")
    assert rc == code
    assert out == ""  # no diagnosis invented
    assert message in err


def test_mat_file_without_a_recognisable_channel(tmp_path: Path) -> None:
    path = tmp_path / "odd.mat"
    scipy.io.savemat(path, {"speed": np.ones((10, 1))})
    rc, out, err = run_analyze(str(path))
    assert rc == 65 and out == ""
    assert "no recognisable channel" in err and "speed" in err


def test_missing_file_exits_66(tmp_path: Path) -> None:
    rc, _, err = run_analyze(str(tmp_path / "nope.mat"))
    assert rc == 66 and "no such file" in err
