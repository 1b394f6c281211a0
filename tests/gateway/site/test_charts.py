"""SVG charts of the site page (gateway/runtime/site/charts.py): plain values in, markup out."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from gateway.core.spectrum_view import Curve, MarkedLine, MatchedLine
from gateway.runtime.site import charts

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_ticks_are_round_and_cover_the_range() -> None:
    assert charts.nice_ticks(0.0, 0.0187) == [0.0, 0.005, 0.01, 0.015, 0.02]
    ticks = charts.nice_ticks(57.3, 88.1)
    assert ticks[0] <= 57.3 and ticks[-1] >= 88.1
    assert ticks == [50.0, 60.0, 70.0, 80.0, 90.0]


def test_trend_buckets_keep_min_and_max_and_an_outage_is_a_gap() -> None:
    points = [(0.5, 1.0), (0.6, 3.0), (1.5, None), (2.5, 2.0)]
    reduced = charts.reduce_trend(points, 0.0, 3.0, buckets=3)
    assert reduced == [(0.5, 1.0, 3.0), (1.5, None, None), (2.5, 2.0, 2.0)]
    root = parse(charts.trend_chart("t", reduced, 0.0, 3.0, "bar"))
    # The BAD bucket breaks the line: a polyline before it and a lone point after it.
    assert len(root.findall(f"{SVG}polyline")) == 1
    assert len(root.findall(f"{SVG}circle")) == 1


def test_a_zone_boundary_far_above_the_data_does_not_squash_the_trend() -> None:
    reduced = [(float(i), 0.45, 0.5) for i in range(10)]
    far = charts.Level(4.5, "zone-d", "zone D", stretch=False)
    svg = charts.trend_chart("v", reduced, 0.0, 10.0, "mm/s", levels=[far])
    assert "zone D" not in svg
    near = charts.Level(0.6, "zone-b", "zone B", stretch=False)
    assert "zone B" in charts.trend_chart("v", reduced, 0.0, 10.0, "mm/s", levels=[near])


def test_spectrum_marks_each_line_where_its_frequency_is_and_rings_matched_lines() -> None:
    curve = Curve("envelope spectrum", "g²", 1.0, tuple([0.0] * 176 + [5.0] + [0.0] * 323))
    lines = [MarkedLine("BPFO", 1, 176.0), MarkedLine("BPFO", 2, 352.0),
             MarkedLine("BPFI", 1, 600.0)]  # beyond the curve: not drawn  # fmt: skip
    matched = [MatchedLine("bearing.outer_race", "1x", 176.0, 20.0)]
    root = parse(charts.spectrum_chart("env", curve, lines=lines, matched=matched,
                                       band_hz=(100.0, 300.0)))  # fmt: skip
    marks = {(m.get("data-line"), m.get("data-harmonic")): m for m in root.iter(f"{SVG}line")
             if m.get("data-line")}  # fmt: skip
    assert set(marks) == {("BPFO", "1"), ("BPFO", "2")}
    x0, x_end = charts.MARGIN_LEFT, charts.WIDTH - charts.MARGIN_RIGHT
    top_hz = 499.0
    expected_x = x0 + 176.0 / top_hz * (x_end - x0)
    assert abs(float(marks[("BPFO", "1")].get("x1")) - expected_x) < 0.2
    ring = root.find(f"{SVG}circle")
    assert ring is not None and ring.get("class") == "matched"
    assert abs(float(ring.get("cx")) - expected_x) < 0.2
    band = root.find(f"{SVG}rect[@data-band]")
    assert band is not None and band.get("data-band") == "100-300"


def test_text_from_the_configuration_is_escaped() -> None:
    curve = Curve("spectrum", "g", 1.0, (0.0, 1.0, 0.5))
    svg = charts.spectrum_chart('<script>alert("x")</script>', curve)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    parse(svg)


def test_zone_bar_places_the_needle_in_the_zone_of_the_value() -> None:
    svg = charts.zone_bar(3.1, (1.4, 2.8, 4.5), "C")
    root = parse(svg)
    needle = root.find(f"{SVG}line")
    assert needle is not None and needle.get("data-zone") == "C"
    rects = {r.get("class"): r for r in root.iter(f"{SVG}rect")}
    zone_c = rects["zone zone-c"]
    x = float(needle.get("x1"))
    assert float(zone_c.get("x")) <= x <= float(zone_c.get("x")) + float(zone_c.get("width"))
    assert re.search(r"3\.10 mm/s", svg)
