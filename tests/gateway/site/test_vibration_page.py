"""The vibration page (issue 16, item 3): the envelope spectrum with the bearing's BPFO, BPFI,
BSF and FTF and their harmonics marked at the current speed, and trends of velocity RMS,
kurtosis and crest factor against the learnt baseline.

A real `VibrationDetector` with a bearing of its own geometry (a 15 degree contact angle, so
cos(phi) matters) is fed synthetic blocks; blocks and the features it derives are stored in a
real telemetry.db, as the daemon stores them; the page is served on loopback and read over
HTTP. Where each mark must be comes from the rolling-element kinematics (Randall & Antoni,
MSSP 25 (2011), eq. 1-4), where each trend's baseline band must be from the mean and standard
deviation of the features of the healthy blocks the detector learnt from; both are read back
from the SVG's own axes, not from the attributes the chart writes."""

from __future__ import annotations

import math
import re
import statistics
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from detectors.vibration import VibrationDetector
from detectors.vibration.bearing import BearingGeometry
from detectors.vibration.diagnose import Settings
from gateway.core.records import Sample, Waveform
from gateway.runtime.site.live_values import LiveValues
from gateway.runtime.site.pages import DeviceInfo
from gateway.runtime.site.server import SitePageServer
from gateway.store import TelemetryStore
from tests.detectors.vibration.signals import bearing_fault

from .sources import NOW, make_pages

SVG = "{http://www.w3.org/2000/svg}"
FS = 25600.0
BLOCK = 16384
TAG = "pump-1.de_accel"
SPEED_TAG = "pump-1.speed"
# n balls, ball diameter d, pitch diameter D, contact angle phi.
N, D_BALL, D_PITCH, PHI_DEG = 11, 9.0, 45.0, 15.0
HARMONICS = {"BPFO": 3, "BPFI": 3, "BSF": 4, "FTF": 3}
SETTINGS = Settings(race_harmonics=3, ball_harmonics=4, cage_harmonics=3)
BASELINE_BLOCKS = 3
TRENDS = {"Velocity RMS": "velocity_rms_mm_s", "Kurtosis": "kurtosis",
          "Crest factor": "crest_factor"}  # fmt: skip


def defect_hz(shaft_hz: float) -> dict[str, float]:
    """The bearing's defect frequencies at `shaft_hz`, from its geometry."""
    ratio = D_BALL / D_PITCH * math.cos(math.radians(PHI_DEG))
    return {
        "BPFO": N / 2 * shaft_hz * (1 - ratio),
        "BPFI": N / 2 * shaft_hz * (1 + ratio),
        "BSF": D_PITCH / (2 * D_BALL) * shaft_hz * (1 - ratio**2),
        "FTF": shaft_hz / 2 * (1 - ratio),
    }


def healthy(seed: int) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(BLOCK)


def outer_race(count: int, shaft_hz: float, seed: int) -> list[np.ndarray]:
    order = defect_hz(1.0)["BPFO"]
    x = bearing_fault("outer", multiplier=order, fs=FS, seconds=BLOCK * count / FS,
                      shaft_hz=shaft_hz, seed=seed)  # fmt: skip
    return [x[i * BLOCK : (i + 1) * BLOCK] for i in range(count)]


class Plant:
    """The detector and telemetry.db, fed block by block as the daemon feeds them."""

    def __init__(self, telemetry: TelemetryStore) -> None:
        self.telemetry = telemetry
        self.detector = VibrationDetector(
            asset="pump-1", tag_id=TAG, rpm_tag=SPEED_TAG, settings=SETTINGS,
            geometry=BearingGeometry("test-bearing", N, D_BALL, D_PITCH, PHI_DEG),
            confirm_blocks=2, baseline_blocks=BASELINE_BLOCKS,
        )  # fmt: skip
        self.features: list[list[Sample]] = []  # per analysed block
        self.ts = NOW - 120.0

    def speed(self, rpm: float) -> None:
        self.detector.update(Sample(SPEED_TAG, self.ts, rpm))

    async def block(self, data: np.ndarray) -> None:
        waveform = Waveform(TAG, self.ts, FS, data, unit="g")
        self.ts += 1.0
        self.detector.update(waveform)
        await self.telemetry.write_waveform(waveform)
        features = self.detector.feature_samples()
        assert features, self.detector.problem
        self.features.append(features)
        await self.telemetry.write_samples(features)

    def values_of(self, feature: str) -> list[float]:
        tag = f"{TAG}.{feature}"
        return [s.value for block in self.features for s in block if s.tag == tag]


@pytest.fixture
async def telemetry(tmp_path: Path) -> AsyncIterator[TelemetryStore]:
    store = await TelemetryStore.open(tmp_path / "telemetry.db")
    yield store
    await store.close()


# --- reading the charts back -----------------------------------------------------------------


def figure(html: str, opening: str) -> ET.Element:
    found = re.search(re.escape(opening) + r"(<svg .*?</svg>)", html, re.S)
    assert found is not None, f"no chart after {opening!r}"
    return ET.fromstring(found.group(1))


class Axis:
    """Data value <-> view box coordinate of one axis, from the chart's own tick labels."""

    def __init__(self, ticks: Sequence[tuple[float, float]]) -> None:
        assert len(ticks) >= 2, ticks
        (p0, v0), (p1, v1) = ticks[0], ticks[-1]
        self.scale = (v1 - v0) / (p1 - p0)
        self.p0, self.v0 = p0, v0

    def value(self, position: float) -> float:
        return self.v0 + (position - self.p0) * self.scale


def ticks(svg: ET.Element, anchor: str) -> list[tuple[float, float]]:
    """(position, value) of the tick labels: x axis `middle`, y axis `end`; a y label sits
    4 units below its grid line."""
    out = []
    for text in svg.iter(f"{SVG}text"):
        if text.get("class") != "tick" or text.get("text-anchor") != anchor:
            continue
        position = float(text.get("x" if anchor == "middle" else "y", "nan"))
        out.append((position if anchor == "middle" else position - 4, float(text.text or "")))
    return sorted(out)


def marks(envelope: ET.Element) -> dict[tuple[str, int], float]:
    """(line, harmonic) -> frequency where the chart draws it, read off its x axis."""
    x = Axis(ticks(envelope, "middle"))
    out = {}
    for line in envelope.iter(f"{SVG}line"):
        name = line.get("data-line")
        if name is not None:
            out[(name, int(line.get("data-harmonic", "0")))] = x.value(float(line.get("x1", "")))
    return out


def hz_per_unit(svg: ET.Element) -> float:
    return abs(Axis(ticks(svg, "middle")).scale)


async def vibration_page(server: SitePageServer, http: aiohttp.ClientSession) -> str:
    async with http.get(f"{server.url}vibration/{TAG}") as reply:
        assert reply.status == 200
        return await reply.text()


# --- the test --------------------------------------------------------------------------------


async def test_marks_every_defect_line_at_the_current_speed_and_trends_against_the_baseline(
    tmp_path: Path, telemetry: TelemetryStore, http: aiohttp.ClientSession
) -> None:
    plant = Plant(telemetry)
    plant.speed(1800.0)
    for seed in range(BASELINE_BLOCKS):
        await plant.block(healthy(seed))
    assert plant.detector.baseline.learned
    for data in outer_race(3, 30.0, seed=7):
        await plant.block(data)
    pump = DeviceInfo("pump-1", "pump-1", "Pump 1", "simulated", ())
    pages = make_pages(tmp_path, LiveValues(), telemetry=telemetry, spectra=[plant.detector],
                       devices=[pump])  # fmt: skip
    server = SitePageServer(pages, "127.0.0.1", 0)
    await server.start()
    try:
        html = await vibration_page(server, http)
        check_marks(html, 30.0)
        check_trends(html, plant)
        # The outer race fault the blocks carry: its rings sit on BPFO harmonics.
        rings = [c for c in figure(html, 'id="envelope">').iter(f"{SVG}circle")
                 if c.get("class") == "matched"]  # fmt: skip
        assert rings
        bpfo = defect_hz(30.0)["BPFO"]
        for ring in rings:
            order = float(ring.get("data-hz", "")) / bpfo
            assert round(order) >= 1 and abs(order - round(order)) < 0.03 * round(order)

        # The machine slows down: the next block's marks follow the new speed.
        plant.speed(1500.0)
        await plant.block(healthy(99))
        check_marks(await vibration_page(server, http), 25.0)
    finally:
        await server.close()


def check_marks(html: str, shaft_hz: float) -> None:
    assert f"{shaft_hz * 60:.0f} rpm" in html
    envelope = figure(html, 'id="envelope">')
    drawn = marks(envelope)
    expected = {(name, h): h * f for name, f in defect_hz(shaft_hz).items()
                for h in range(1, HARMONICS[name] + 1)}  # fmt: skip
    expected[("shaft", 1)] = shaft_hz
    assert sorted(drawn) == sorted(expected)
    # Coordinates are written to 0.1 of a view box unit (about a tenth of a pixel).
    tolerance = 0.3 * hz_per_unit(envelope)
    for key, hz in expected.items():
        assert abs(drawn[key] - hz) <= tolerance, (key, drawn[key], hz)
    # Each mark's title and data-hz name its frequency to the hundredth of a hertz.
    for line in envelope.iter(f"{SVG}line"):
        key = (line.get("data-line", ""), int(line.get("data-harmonic", "0")))
        if key[0]:
            assert abs(float(line.get("data-hz", "")) - expected[key]) <= 0.006, key
    # The labels name each family once, at its fundamental.
    labels = sorted(t.text or "" for t in envelope.iter(f"{SVG}text")
                    if (t.get("class") or "").startswith("mark-label"))  # fmt: skip
    assert labels == sorted([*HARMONICS, "1x"])
    # The acceleration spectrum marks the shaft rate.
    spectrum = figure(html, 'id="spectrum">')
    shaft = marks(spectrum)
    assert list(shaft) == [("shaft", 1)]
    assert abs(shaft[("shaft", 1)] - shaft_hz) <= 0.3 * hz_per_unit(spectrum)
    # The defect frequency table: each family's harmonics, to 0.1 Hz.
    table = re.search(r'<table id="lines">.*?</table>', html, re.S)
    assert table is not None
    for name, rows in HARMONICS.items():
        row = re.search(rf"<tr><td>{name}</td>(.*?)</tr>", table.group(0))
        assert row is not None, name
        cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
        shown = [float(c.removesuffix(" Hz")) for c in cells if c]
        want = [h * defect_hz(shaft_hz)[name] for h in range(1, rows + 1)]
        assert len(shown) == rows, (name, shown)
        assert all(abs(s - w) <= 0.051 for s, w in zip(shown, want, strict=True)), (name, shown)


def check_trends(html: str, plant: Plant) -> None:
    for title, feature in TRENDS.items():
        svg = figure(html, f'<h3>{title}</h3><figure class="chart-box trend">')
        y = Axis(ticks(svg, "end"))
        values = plant.values_of(feature)
        learnt = values[:BASELINE_BLOCKS]
        mean, std = statistics.mean(learnt), statistics.stdev(learnt)
        unit = abs(y.scale)  # value per view box unit: the drawing's resolution
        [band] = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "band baseline"]
        top, height = float(band.get("y", "")), float(band.get("height", ""))
        assert abs(y.value(top) - (mean + 2 * std)) <= unit, (title, y.value(top), mean, std)
        assert abs(y.value(top + height) - (mean - 2 * std)) <= unit, title
        [level] = [li for li in svg.iter(f"{SVG}line") if li.get("class") == "level baseline"]
        assert abs(y.value(float(level.get("y1", ""))) - mean) <= unit, title
        # The series is every stored value of the feature, one point per block here.
        [series] = [p for p in svg.iter(f"{SVG}polyline") if p.get("class") == "series"]
        points = [tuple(map(float, p.split(","))) for p in (series.get("points") or "").split()]
        drawn = [y.value(py) for _, py in points]
        assert len(drawn) == len(values), title
        assert all(abs(d - v) <= unit for d, v in zip(drawn, values, strict=True)), title
