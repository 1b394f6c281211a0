"""Charts of the site page as SVG, drawn on the server: plain values in, markup out.

Why SVG from the server rather than a chart library in the browser: nothing to ship or keep up
to date but this module, the first response is already complete (no script needed to see a
value), a marker is an element the browser tests can find by its attributes (`data-line`,
`data-hz`), and one `viewBox` scales to a phone, a tablet and a control-room screen. Styling is
by class in site.css; presentation attributes only, so the page's Content-Security-Policy can
forbid inline styles.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from gateway.core.spectrum_view import Curve, MarkedLine, MatchedLine

WIDTH = 900
HEIGHT = 260
MARGIN_LEFT = 64
MARGIN_RIGHT = 16
MARGIN_TOP = 22
MARGIN_BOTTOM = 36
# Trend points: one min/max pair per pixel column would be ~800; fewer keeps updates small.
TREND_BUCKETS = 300


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded horizontal band (a baseline's mean +- std, an ISO zone)."""

    lo: float
    hi: float
    css: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class Level:
    """A horizontal reference line (a baseline mean, a zone boundary). With `stretch` False
    it is drawn only when it falls within the data's range (a zone boundary far above a
    healthy machine's values would squash them into a flat line)."""

    value: float
    css: str
    label: str = ""
    stretch: bool = True


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) from at or below `lo` to at or above `hi`."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(round((last - first) / step) + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.4g}"
    return f"{value:.3g}"


class _Frame:
    """Maps data coordinates to the plot area of the view box."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float) -> None:
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1.0
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1.0
        self.left, self.right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
        self.top, self.bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM

    def x(self, value: float) -> float:
        share = (value - self.x0) / (self.x1 - self.x0)
        return round(self.left + share * (self.right - self.left), 1)

    def y(self, value: float) -> float:
        share = (value - self.y0) / (self.y1 - self.y0)
        share = min(1.05, max(-0.05, share))
        return round(self.bottom - share * (self.bottom - self.top), 1)


def _svg(kind: str, title: str, body: list[str]) -> str:
    return (
        f'<svg class="chart {kind}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _axes(
    frame: _Frame, x_ticks: Sequence[tuple[float, str]], y_ticks: Sequence[float], y_unit: str
) -> list[str]:
    out = [
        f'<rect class="plot" x="{frame.left}" y="{frame.top}" width="{frame.right - frame.left}"'
        f' height="{frame.bottom - frame.top}"/>'
    ]
    for value in y_ticks:
        y = frame.y(value)
        out.append(f'<line class="grid" x1="{frame.left}" x2="{frame.right}" y1="{y}" y2="{y}"/>')
        out.append(
            f'<text class="tick" x="{frame.left - 6}" y="{y + 4}" text-anchor="end">'
            f"{escape(_fmt(value))}</text>"
        )
    for value, label in x_ticks:
        x = frame.x(value)
        out.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{frame.top}" y2="{frame.bottom}"/>')
        out.append(
            f'<text class="tick" x="{x}" y="{frame.bottom + 16}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    if y_unit:
        out.append(
            f'<text class="unit" x="{frame.left}" y="{frame.top - 6}" text-anchor="start">'
            f"{escape(y_unit)}</text>"
        )
    return out


def empty_chart(title: str, message: str) -> str:
    return _svg(
        "empty",
        title,
        [
            f'<rect class="plot" x="{MARGIN_LEFT}" y="{MARGIN_TOP}"'
            f' width="{WIDTH - MARGIN_LEFT - MARGIN_RIGHT}"'
            f' height="{HEIGHT - MARGIN_TOP - MARGIN_BOTTOM}"/>',
            f'<text class="message" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            f"{escape(message)}</text>",
        ],
    )


# --- trends ----------------------------------------------------------------------------------


def reduce_trend(
    points: Sequence[tuple[float, float | None]], start: float, end: float,
    buckets: int = TREND_BUCKETS,
) -> list[tuple[float, float | None, float | None]]:  # fmt: skip
    """(time, min, max) per time bucket of [start, end); a bucket without a value is a gap
    (None, None), so an outage shows as a break in the line, not as a straight line over it."""
    if end <= start or buckets < 1:
        return []
    width = (end - start) / buckets
    lows: list[float | None] = [None] * buckets
    highs: list[float | None] = [None] * buckets
    seen = [False] * buckets
    for ts, value in points:
        index = int((ts - start) / width)
        if not 0 <= index < buckets:
            continue
        seen[index] = True
        if value is None or not math.isfinite(value):
            continue
        low, high = lows[index], highs[index]
        lows[index] = value if low is None else min(low, value)
        highs[index] = value if high is None else max(high, value)
    return [(start + (i + 0.5) * width, lows[i], highs[i]) for i in range(buckets) if seen[i]]


def _time_label(ts: float, span_s: float) -> str:
    return time.strftime("%H:%M:%S" if span_s < 300 else "%H:%M", time.localtime(ts))


def trend_chart(
    title: str,
    reduced: Sequence[tuple[float, float | None, float | None]],
    start: float,
    end: float,
    unit: str = "",
    *,
    bands: Sequence[Band] = (),
    levels: Sequence[Level] = (),
) -> str:
    """A time trend: the min-max envelope of each bucket as a line (a single line where the
    bucket held one value), with reference bands and levels."""
    data = [v for _, lo, hi in reduced for v in (lo, hi) if v is not None]
    if not data:
        return empty_chart(title, "no value in this period")
    values = data + [b.lo for b in bands] + [b.hi for b in bands]
    values += [lv.value for lv in levels if lv.stretch]
    low, high = min(values), max(values)
    # A level that does not stretch the axis is drawn within half the largest value of it.
    reach = max(high - low, 0.5 * max(abs(high), abs(low))) or 1.0
    levels = [lv for lv in levels if lv.stretch or low - reach <= lv.value <= high + reach]
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    y_ticks = nice_ticks(low - pad, high + pad)
    frame = _Frame(start, end, y_ticks[0] if y_ticks else low, y_ticks[-1] if y_ticks else high)
    x_ticks = [(t, _time_label(t, end - start)) for t in _time_ticks(start, end)]
    body = _axes(frame, x_ticks, y_ticks, unit)
    for band in bands:
        top, bottom = frame.y(band.hi), frame.y(band.lo)
        body.append(
            f'<rect class="band {escape(band.css)}" x="{frame.left}" y="{top}"'
            f' width="{frame.right - frame.left}" height="{max(0.5, bottom - top)}">'
            f"<title>{escape(band.label)}</title></rect>"
        )
    for level in levels:
        y = frame.y(level.value)
        body.append(
            f'<line class="level {escape(level.css)}" x1="{frame.left}" x2="{frame.right}"'
            f' y1="{y}" y2="{y}"/>'
        )
        if level.label:
            body.append(
                f'<text class="level-label" x="{frame.right - 4}" y="{y - 4}"'
                f' text-anchor="end">{escape(level.label)}</text>'
            )
    body += _trend_paths(frame, reduced)
    return _svg("trend", title, body)


def _trend_paths(
    frame: _Frame, reduced: Sequence[tuple[float, float | None, float | None]]
) -> list[str]:
    segments: list[list[str]] = [[]]
    for ts, lo, hi in reduced:
        if lo is None or hi is None:
            if segments[-1]:
                segments.append([])
            continue
        x = frame.x(ts)
        segments[-1].append(f"{x},{frame.y(hi)}")
        if hi != lo:
            segments[-1].append(f"{x},{frame.y(lo)}")
    out = []
    for segment in segments:
        if len(segment) == 1:
            cx, cy = segment[0].split(",")
            out.append(f'<circle class="series" cx="{cx}" cy="{cy}" r="2"/>')
        elif segment:
            out.append(f'<polyline class="series" points="{" ".join(segment)}"/>')
    return out


def _time_ticks(start: float, end: float) -> list[float]:
    span = end - start
    step = next((s for s in (10, 30, 60, 300, 600, 900, 1800, 3600, 7200) if span / s <= 7), 14400)
    first = math.ceil(start / step) * step
    return [first + i * step for i in range(int((end - first) / step) + 1)]


# --- spectra ---------------------------------------------------------------------------------


def spectrum_chart(
    title: str,
    curve: Curve,
    *,
    top_hz: float | None = None,
    lines: Sequence[MarkedLine] = (),
    matched: Sequence[MatchedLine] = (),
    band_hz: tuple[float, float] | None = None,
) -> str:
    """An amplitude spectrum from 0 Hz to `top_hz` (the curve's end by default), with the
    marked lines (a dashed line each, labelled at the fundamental), the lines the diagnosis
    matched (a ring on the curve) and a demodulation band (shaded)."""
    top = min(top_hz, curve.top_hz) if top_hz is not None else curve.top_hz
    shown = curve.values[: int(top / curve.df_hz) + 1] if curve.df_hz > 0 else ()
    if len(shown) < 2 or top <= 0:
        return empty_chart(title, "no spectrum")
    peak = max(shown[1:]) if len(shown) > 1 else 0.0
    if not peak > 0:
        return empty_chart(title, "flat spectrum")
    y_ticks = nice_ticks(0.0, peak * 1.1)
    frame = _Frame(0.0, top, 0.0, y_ticks[-1] if y_ticks else peak)
    x_ticks = [(f, _fmt(f)) for f in nice_ticks(0.0, top, 8)]
    body = _axes(frame, x_ticks, y_ticks, curve.unit)
    body.append(
        f'<text class="unit" x="{frame.right}" y="{HEIGHT - 4}" text-anchor="end">Hz</text>'
    )
    if band_hz is not None:
        lo, hi = max(0.0, band_hz[0]), min(top, band_hz[1])
        if hi > lo:
            body.append(
                f'<rect class="band demod" data-band="{_fmt(band_hz[0])}-{_fmt(band_hz[1])}"'
                f' x="{frame.x(lo)}" y="{frame.top}" width="{frame.x(hi) - frame.x(lo)}"'
                f' height="{frame.bottom - frame.top}"><title>demodulation band '
                f"{escape(_fmt(band_hz[0]))}-{escape(_fmt(band_hz[1]))} Hz</title></rect>"
            )
    points = " ".join(f"{frame.x(i * curve.df_hz)},{frame.y(v)}" for i, v in enumerate(shown))
    body.append(f'<polyline class="series" points="{points}"/>')
    for line in lines:
        if not 0 < line.freq_hz <= top:
            continue
        x = frame.x(line.freq_hz)
        css = f"mark mark-{line.name.lower()}"
        body.append(
            f'<line class="{css}" data-line="{escape(line.name)}" data-harmonic="{line.harmonic}"'
            f' data-hz="{line.freq_hz:.2f}" x1="{x}" x2="{x}" y1="{frame.top}"'
            f' y2="{frame.bottom}"><title>{escape(_line_name(line))} {line.freq_hz:.1f} Hz'
            "</title></line>"
        )
        if line.harmonic == 1:
            body.append(
                f'<text class="mark-label {css}" x="{x + 3}" y="{frame.top + 12}">'
                f"{escape(line.name if line.name != 'shaft' else '1x')}</text>"
            )
    for hit in matched:
        if not 0 < hit.freq_hz <= top:
            continue
        index = min(len(shown) - 1, round(hit.freq_hz / curve.df_hz))
        near = shown[max(0, index - 1) : index + 2]
        body.append(
            f'<circle class="matched" data-fault="{escape(hit.fault)}"'
            f' data-label="{escape(hit.label)}" data-hz="{hit.freq_hz:.2f}"'
            f' cx="{frame.x(hit.freq_hz)}" cy="{frame.y(max(near))}" r="6">'
            f"<title>matched {escape(hit.label)} at {hit.freq_hz:.1f} Hz,"
            f" {hit.snr_db:.0f} dB above the floor</title></circle>"
        )
    return _svg("spectrum", title, body)


def _line_name(line: MarkedLine) -> str:
    if line.name == "shaft":
        return f"{line.harmonic}x shaft"
    return line.name if line.harmonic == 1 else f"{line.harmonic}x {line.name}"


def zone_bar(velocity: float | None, boundaries: Sequence[float], zone: str | None) -> str:
    """The ISO 20816-3 zones A-D as a bar with the current velocity RMS marked."""
    if velocity is None or len(boundaries) != 3:
        return empty_chart("ISO 20816-3 zone", "no severity yet")
    top = max(boundaries[2] * 1.5, velocity * 1.1)
    width, height, left, right = WIDTH, 70, MARGIN_LEFT, WIDTH - MARGIN_RIGHT

    def x(v: float) -> float:
        return round(left + min(1.0, v / top) * (right - left), 1)

    edges = [0.0, *boundaries, top]
    body = []
    for name, lo, hi in zip("ABCD", edges, edges[1:], strict=False):
        body.append(
            f'<rect class="zone zone-{name.lower()}" x="{x(lo)}" y="14" width="{x(hi) - x(lo)}"'
            f' height="26"/><text class="zone-label" x="{(x(lo) + x(hi)) / 2}" y="32"'
            f' text-anchor="middle">{name}</text>'
        )
    for b in boundaries:
        body.append(
            f'<text class="tick" x="{x(b)}" y="56" text-anchor="middle">{escape(_fmt(b))}</text>'
        )
    body.append(
        f'<line class="needle" data-zone="{escape(zone or "")}" x1="{x(velocity)}"'
        f' x2="{x(velocity)}" y1="8" y2="46"/>'
        f'<text class="needle-label" x="{x(velocity)}" y="68" text-anchor="middle">'
        f"{velocity:.2f} mm/s</text>"
    )
    return (
        f'<svg class="chart zones" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="ISO 20816-3 zone {escape(zone or "")}"'
        f' xmlns="http://www.w3.org/2000/svg"><title>ISO 20816-3 zone {escape(zone or "")}'
        "</title>" + "".join(body) + "</svg>"
    )
