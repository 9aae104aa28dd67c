"""A small inline-SVG line chart: no JavaScript, no library, no network, text escaped.

Missing readings (None) break a line into segments, so a gap is drawn as a gap. Warmup and
compile steps are shaded bands; mid-run toggles are labelled vertical markers. Long series are
reduced to the min and max of each pixel column for drawing only (the data files keep all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777",
           "#4b5563")


@dataclass
class Line:
    label: str
    points: list[tuple[float, float | None]]  # (x, y); y None is a missing reading
    color: str = PALETTE[0]
    dots: bool = False                         # sparse series (validation loss) get dots
    dashed: bool = False


@dataclass
class Band:
    x0: float
    x1: float
    label: str


@dataclass
class Marker:
    x: float
    label: str
    color: str = "#374151"


@dataclass
class Chart:
    title: str
    unit: str
    lines: list[Line]
    bands: list[Band] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    x_label: str = "step"
    from_zero: bool = False


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 × 10^k apart) covering low..high; whole numbers only
    when `integer` (steps)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * power for m in steps if m * power >= raw)
    if integer:
        step = max(1, round(step))
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def unit_scale(unit: str, magnitude: float) -> tuple[float, str]:
    """(divisor, unit text) so tick labels stay short: bytes in MiB/GiB, seconds in ms."""
    magnitude = abs(magnitude)
    if unit == "bytes":
        for name, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if magnitude >= scale:
                return float(scale), name
        return 1.0, "B"
    if unit == "s" and magnitude < 1:
        return 1e-3, "ms"
    if unit in ("tokens/s", "FLOP", "FLOP/s", "tokens") and magnitude >= 1e4:
        for name, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if magnitude >= scale:
                return scale, f"{name} {unit}" if unit != "tokens/s" else f"{name}tokens/s"
    return 1.0, unit


def _tick_text(value: float, divisor: float) -> str:
    scaled = value / divisor
    if scaled == 0:
        return "0"
    if abs(scaled) >= 1000:
        return f"{scaled:,.0f}"
    return f"{scaled:.4g}"


def decimate(points: list[tuple[float, float | None]], buckets: int) -> list[tuple[float, float | None]]:
    """Min and max of each of `buckets` x-ranges, in x order; a bucket with a gap keeps the gap."""
    if len(points) <= 2 * buckets:
        return points
    size = len(points) / buckets
    out: list[tuple[float, float | None]] = []
    for b in range(buckets):
        chunk = points[int(b * size):int((b + 1) * size)]
        present = [p for p in chunk if p[1] is not None]
        if not present:
            out.append((chunk[0][0], None))
            continue
        low = min(present, key=lambda p: p[1])
        high = max(present, key=lambda p: p[1])
        out.extend(sorted({low, high}, key=lambda p: p[0]))
        if len(present) < len(chunk):
            out.append((chunk[-1][0], None))
    return out


def render(chart: Chart, width: int = 540, height: int = 250) -> str:
    """The chart as an <svg> element (no xmlns needed inline in HTML5)."""
    left, right, bottom = 64, 14, 38
    plot_w = width - left - right
    lines = [Line(ln.label, decimate(ln.points, plot_w), ln.color, ln.dots, ln.dashed)
             for ln in chart.lines]
    legend, legend_rows = _legend(chart, lines, left, width)
    top = 30 + 15 * legend_rows
    height += 15 * legend_rows  # the legend takes its rows from above, not from the plot
    plot_h = height - top - bottom
    xs = [x for ln in lines for x, _ in ln.points] + [m.x for m in chart.markers]
    ys = [y for ln in lines for _, y in ln.points if y is not None]
    title = f"{chart.title}" + (f" ({chart.unit})" if chart.unit else "")
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="{_e(title)}">',
             f"<title>{_e(title)}</title>"]
    if not ys:
        parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
                     'class="frame"/>')
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" class="empty" '
                     'text-anchor="middle">no readings recorded (n/a)</text>')
        parts.append(legend)
        parts.append("</svg>")
        return "".join(parts)

    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    y_low, y_high = min(ys), max(ys)
    if chart.from_zero:
        y_low = min(0.0, y_low)
    if y_high == y_low:
        pad = abs(y_high) * 0.1 or 1.0
        y_low, y_high = (y_low if chart.from_zero else y_low - pad), y_high + pad
    else:  # headroom, so a flat line at the maximum does not sit on the frame
        y_high += (y_high - y_low) * 0.04
    # Ticks are chosen in the displayed unit (MiB, ms), so their labels come out round.
    divisor, unit_text = unit_scale(chart.unit, max(abs(y_low), abs(y_high)))
    y_ticks = [t * divisor for t in nice_ticks(y_low / divisor, y_high / divisor)]
    y_low, y_high = min(y_ticks[0], y_low), max(y_ticks[-1], y_high)
    x_ticks = [t for t in nice_ticks(x_low, x_high, 6, integer=True) if x_low <= t <= x_high]

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y_low) / (y_high - y_low) * plot_h

    for band in chart.bands:
        if band.x1 + 0.5 <= x_low or band.x0 - 0.5 >= x_high:
            continue  # outside this chart's steps (e.g. a chart of evaluations only)
        x0, x1 = px(max(band.x0 - 0.5, x_low)), px(min(band.x1 + 0.5, x_high))
        parts.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 2):.1f}" '
                     f'height="{plot_h}" class="band"><title>{_e(band.label)}</title></rect>')
        parts.append(f'<text x="{x0 + 3:.1f}" y="{top + 11}" class="band-label">'
                     f"{_e(band.label)}</text>")
    for tick in y_ticks:
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     'class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
                     f"{_e(_tick_text(tick, divisor))}</text>")
    for tick in x_ticks:
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" '
                     f'y2="{top + plot_h + 4}" class="axis"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                     f'class="tick">{_e(_tick_text(tick, 1.0))}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" '
                 f'class="axis-label">{_e(chart.x_label)}</text>')
    parts.append(f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" class="axis-label" '
                 f'transform="rotate(-90 12 {top + plot_h / 2})">{_e(unit_text)}</text>')
    for ln in lines:
        parts.extend(_draw_line(ln, px, py))
    for marker in chart.markers:
        x = px(marker.x)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" '
                     f'class="marker" stroke="{_e(marker.color)}">'
                     f"<title>{_e(marker.label)}</title></line>")
        parts.append(f'<text x="{x + 3:.1f}" y="{top + plot_h - 5}" class="marker-label" '
                     f'fill="{_e(marker.color)}">{_e(marker.label[:40])}</text>')
    parts.append(legend)
    parts.append("</svg>")
    return "".join(parts)


def _draw_line(line: Line, px, py) -> list[str]:
    segments: list[list[tuple[float, float]]] = [[]]
    for x, y in line.points:
        if y is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((px(x), py(y)))
    out = []
    dash = ' stroke-dasharray="5 3"' if line.dashed else ""
    for seg in segments:
        if len(seg) >= 2:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            out.append(f'<polyline points="{path}" fill="none" stroke="{_e(line.color)}" '
                       f'stroke-width="1.6" stroke-linejoin="round"{dash}/>')
        if len(seg) == 1 or line.dots:
            out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{_e(line.color)}"/>'
                       for x, y in seg)
    return out


def _legend(chart: Chart, lines: list[Line], left: int, width: int) -> tuple[str, int]:
    """Title on the first row, then legend items left to right, wrapping; (svg, item rows)."""
    parts = [f'<text x="{left}" y="16" class="chart-title">{_e(chart.title)}</text>']
    if len(lines) == 1 and lines[0].label == chart.title:
        return parts[0], 0  # the title already names the only line
    x, row = float(left), 0 if not lines else 1
    for ln in lines:
        has = any(y is not None for _, y in ln.points)
        text = ln.label if has else f"{ln.label}: n/a"
        item_w = 6.0 * len(text) + 28
        if x + item_w > width and x > left:
            x, row = float(left), row + 1
        y = 16 + 15 * row
        parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" rx="2" '
                     f'fill="{_e(ln.color if has else "#d1d5db")}"/>')
        parts.append(f'<text x="{x + 14:.1f}" y="{y}" class="legend">{_e(text)}</text>')
        x += item_w
    return "".join(parts), row
