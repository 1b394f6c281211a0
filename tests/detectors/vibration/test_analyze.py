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
import scipy.io.wavfile

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
        ("cwru_b028_3007_de", "6205", "bearing.rolling_element"),
        ("cwru_normal_97_de", "6205", "normal"),
        ("mfpt_or_vload1", "NICE", "bearing.outer_race"),
        ("mfpt_ir_vload1", "NICE", "bearing.inner_race"),
        ("ims_20031022_120624_ch1", "ZA-2115", "normal"),
        ("hit_ir5_1200", "6205", "bearing.inner_race"),
        ("hit_or5_1200", "6205", "bearing.outer_race"),
    ],
)
def test_vendored_excerpts_are_read_as_they_are(name: str, bearing: str, verdict: str) -> None:
    # The .npz excerpts carry `fs` and `rpm`: nothing else is needed than the bearing.
    code, out, err = run_analyze(str(EXCERPTS / f"{name}.npz"), "--bearing", bearing, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["verdict"] == verdict
    assert result["source"]["fs_source"] == "file" and result["source"]["rpm_source"] == "file"
    assert set(result) >= {"verdict", "faults", "features", "iso", "daemon"}
    assert result["iso"]["zone"] in "ABCD"
    confidences = [f["confidence"] for f in result["faults"]]
    assert confidences == sorted(confidences, reverse=True)
    if verdict != "normal":
        ev = result["faults"][0]["evidence"]
        assert {"matched_hz", "harmonics", "snr_db", "expected_hz", "band_hz"} <= set(ev)


def test_npy_needs_the_sample_rate_and_gives_the_same_verdict(tmp_path: Path) -> None:
    path, fs, rpm = excerpt_as_npy("cwru_or007_6_130_de", tmp_path)
    code, _, err = run_analyze(str(path), "--rpm", str(rpm), "--bearing", "6205")
    assert code == 65 and "give it with --fs" in err
    code, out, err = run_analyze(
        str(path), "--fs", str(fs), "--rpm", str(rpm), "--bearing", "6205", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["verdict"] == "bearing.outer_race"


def test_daemon_object_states_blocks_overlap_and_the_tickets_it_would_open() -> None:
    code, out, err = run_analyze(
        str(EXCERPTS / "cwru_or007_6_130_de.npz"), "--bearing", "6205", "--json"
    )
    assert code == 0, err
    daemon = json.loads(out)["daemon"]
    assert daemon["block_length"] == 16384
    assert daemon["rule"]["confirm_blocks"] == 3 and daemon["rule"]["average_blocks"] == 1
    feeds = {f["overlap"]: f for f in daemon["feeds"]}
    assert set(feeds) == {0.0, 0.5}
    # 49152 samples: 3 contiguous blocks, 5 half-overlapping ones; confirmation needs three
    # analyses of separate data, so the ticket opens on the last block of each feed.
    assert (feeds[0.0]["blocks"], feeds[0.5]["blocks"]) == (3, 5)
    for overlap, block in ((0.0, 2), (0.5, 4)):
        (ticket,) = feeds[overlap]["tickets"]
        assert (ticket["code"], ticket["event"], ticket["block"]) == (
            "bearing.outer_race",
            "opened",
            block,
        )
        assert ticket["at_s"] == pytest.approx((block * 16384 * (1 - overlap) + 16384) / 12000)


def test_daemon_replay_says_why_it_cannot_diagnose() -> None:
    # 65536 samples at 51.2 kHz: 16384-sample blocks (6.4 revolutions at 1200 rpm) are
    # assembled into 131072-sample windows, of which the excerpt holds none.
    code, out, err = run_analyze(str(EXCERPTS / "hit_or5_1200.npz"), "--bearing", "6205", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["verdict"] == "bearing.outer_race"
    for feed in result["daemon"]["feeds"]:
        assert feed["tickets"] == [] and feed["analyses"] == 0
        assert feed["window_length"] == 131072
        assert "windows of 131072 samples" in feed["not_diagnosed"]
        assert "no complete window" in feed["not_diagnosed"]


def test_readout_names_harmonics_speed_band_and_what_to_check() -> None:
    code, out, _ = run_analyze(str(EXCERPTS / "cwru_ir007_105_de.npz"), "--bearing", "6205")
    assert code == 0
    assert "Harmonics that decided (level above the envelope floor): 1x at" in out
    assert "Speed used: 1797 rpm (29.95 Hz" in out
    assert "Envelope band:" in out and "bands screened" in out
    assert "What to check: Check the inner race" in out
    assert "Daemon    default rule (confirm_blocks 3, average_blocks 1)" in out
    assert "contiguous, 3 blocks: opens bearing.inner_race at block 2" in out


def test_readable_report_names_verdict_zone_and_matched_line() -> None:
    path = EXCERPTS / "cwru_or007_6_130_de.npz"
    code, out, _ = run_analyze(str(path), "--bearing", "6205")
    assert code == 0
    assert "Verdict   bearing.outer_race" in out
    assert "Matched line: BPFO fitted at 107.7 Hz, 0.3 % above the kinematic 107.3 Hz" in out
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


def ir_excerpt() -> np.ndarray:
    with np.load(EXCERPTS / "cwru_ir007_105_de.npz") as z:
        return z["signal"].astype(np.float64)


def test_any_mat_holding_one_vector_is_read_with_fs_given(tmp_path: Path) -> None:
    path = tmp_path / "IR_1797.mat"  # a HIT-SM-like file: one oddly named vector
    scipy.io.savemat(path, {"z30_1": ir_excerpt()[:, None]})
    rc, out, err = run_analyze(str(path), "--rpm", "1797", "--bearing", "6205")
    assert rc == 65 and out == "" and "give it with --fs" in err
    rc, out, err = run_analyze(str(path), "--fs", "12000", "--rpm", "1797", "--bearing", "6205",
                               "--json")  # fmt: skip
    assert rc == 0, err
    result = json.loads(out)
    assert result["verdict"] == "bearing.inner_race"
    assert (result["source"]["layout"], result["source"]["channel"]) == ("mat", "z30_1")


def test_a_mat_with_several_vectors_needs_channel_and_reads_fs_from_the_file(
    tmp_path: Path,
) -> None:
    x = ir_excerpt()
    path = tmp_path / "two.mat"
    scipy.io.savemat(path, {"accel_a": x[:, None], "accel_b": x[:, None] * 0.5, "Fs": 12000.0})
    rc, out, err = run_analyze(str(path), "--rpm", "1797", "--bearing", "6205")
    assert rc == 65 and "2 channels (accel_a, accel_b); name one with --channel" in err
    rc, out, err = run_analyze(
        str(path), "--channel", "accel_b", "--rpm", "1797", "--bearing", "6205", "--json"
    )
    assert rc == 0, err
    result = json.loads(out)
    assert result["analysis"]["fs_hz"] == 12000.0 and result["source"]["fs_source"] == "file"
    assert result["verdict"] == "bearing.inner_race"
    rc, _, err = run_analyze(str(path), "--channel", "accel_c", "--fs", "12000")
    assert rc == 65 and "no channel `accel_c`" in err


def test_npz_column_of_a_2d_array_by_name_and_index(tmp_path: Path) -> None:
    x = ir_excerpt()
    path = tmp_path / "multi.npz"
    np.savez(path, data=np.column_stack([x * 0.0 + 1e-3 * np.sin(np.arange(x.size)), x]))
    rc, out, err = run_analyze(str(path), "--channel", "data:1", "--fs", "12000", "--rpm",
                               "1797", "--bearing", "6205", "--json")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out)["verdict"] == "bearing.inner_race"


@pytest.mark.parametrize("dtype", ["int16", "int32", "float32"])
def test_wav_from_a_handheld_recorder(tmp_path: Path, dtype: str) -> None:
    x = ir_excerpt()
    full_scale = 4.0  # g at full scale of the recorder
    if dtype == "float32":
        samples = (x / full_scale).astype(np.float32)
    else:
        samples = np.round(x / full_scale * np.iinfo(dtype).max).astype(dtype)
    path = tmp_path / "rec.wav"
    scipy.io.wavfile.write(path, 12000, np.column_stack([samples, samples // 2]))
    rc, out, err = run_analyze(str(path), "--rpm", "1797", "--bearing", "6205", "--scale",
                               str(full_scale), "--json")  # fmt: skip
    assert rc == 0, err
    result = json.loads(out)
    assert result["verdict"] == "bearing.inner_race"
    assert (result["analysis"]["fs_hz"], result["source"]["channels"]) == (12000.0, ["1", "2"])
    # With the recorder's full scale given, levels are in g again.
    accel = float(np.sqrt(np.mean((x - x.mean()) ** 2)))
    assert result["features"]["accel_rms_g"] == pytest.approx(accel, rel=1e-3)


def test_missing_file_exits_66(tmp_path: Path) -> None:
    rc, _, err = run_analyze(str(tmp_path / "nope.mat"))
    assert rc == 66 and "no such file" in err
