"""How the live charts look: display units, colours and which curves compared runs show.

Which chart draws which key is the metric catalogue's (profiler.figures.metrics: `Metric.chart`, also
for the keys built from another one, such as `baseline_ttft_s` or `rank1_step_time_s`); keys
that fit no chart (learning rate, CPU %) stay in the summary table.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiler.figures import metrics

MIB = 2.0**20
MS = 1e-3
DISPLAY = {"bytes": ("MiB", MIB), "s": ("ms", MS)}
"""Catalogue unit -> the unit an axis shows and the divisor that gets there."""


@dataclass(frozen=True)
class ChartSpec:
    name: str
    title: str
    y_label: str
    zero_based: bool
    """An invisible point at 0 keeps zero in view: a 10 MiB wobble should look like one."""
    core: bool
    """Shown while there is no data at all (an empty window still says what it will draw)."""


CHARTS = tuple(ChartSpec(c.name, c.title, DISPLAY.get(c.unit, (c.unit, 1.0))[0], c.from_zero,
                         c.core) for c in metrics.CHARTS)
CHART_NAMES = tuple(c.name for c in CHARTS)


@dataclass(frozen=True)
class CurveSpec:
    key: str
    chart: str
    color: str
    scale: float = 1.0
    """Divide readings by this before drawing (bytes -> MiB, s -> ms)."""
    symbol: str | None = None
    """A marker on each point, for sparse series such as the validation loss."""
    primary: bool = False
    """Drawn for compared runs too (one curve per chart keeps the overlay readable)."""
    dashed: bool = False
    """The original model of a compress run: its measure's colour, dashed (the compressed one
    solid), so each measure has one colour and each model one line style."""

    @property
    def label(self) -> str:
        return metrics.metric(self.key).label


COLORS = {
    "loss_train": "#2563eb", "loss_val": "#ea580c", "tokens_per_s": "#059669",
    "decode_tokens_per_s": "#0d9488", "step_time_s": "#0369a1", "rss_bytes": "#7c3aed",
    "torch_allocated_bytes": "#db2777", "torch_reserved_bytes": "#0891b2",
    "gpu_process_memory_bytes": "#65a30d", "gpu_memory_used_bytes": "#a16207",
    "ttft_s": "#dc2626", "prefill_latency_s": "#9333ea", "decode_latency_s": "#0284c7",
    "gpu_util_percent": "#16a34a", "gpu_power_w": "#ca8a04", "gpu_temperature_c": "#e11d48",
}
"""Keys with a colour of their own; other keys take the next of PALETTE."""
PRIMARY = {"loss_train", "loss_val", "tokens_per_s", "decode_tokens_per_s", "step_time_s",
           "rss_bytes", "ttft_s", "gpu_util_percent", "gpu_power_w", "gpu_temperature_c"}
PALETTE = ("#4f46e5", "#c2410c", "#0f766e", "#be185d", "#4d7c0f", "#b45309", "#1d4ed8",
           "#7e22ce", "#0e7490", "#b91c1c")
RUN_COLORS = {
    "light": ("#111827", "#a21caf", "#064e3b", "#312e81", "#7c2d12", "#422006"),
    "dark": ("#e5e7eb", "#f0abfc", "#5eead4", "#a5b4fc", "#fdba74", "#fde68a"),
}
"""Compared runs, one colour each across every chart (neutral, fuchsia, green, indigo, orange,
yellow): a deep tone on the light theme, a pale one of the same hue on the dark theme, so each
run keeps its hue and is readable on both backgrounds; both far from every live curve's colour
(the live ones are mid tones), and overlays are dashed too."""


def run_color(index: int, theme: str) -> str:
    colors = RUN_COLORS.get(theme, RUN_COLORS["light"])
    return colors[index % len(colors)]


def route(key: str, dynamic_index: int = 0) -> CurveSpec | None:
    """The curve for a metric key, on the chart the catalogue names, or None when none does."""
    found = metrics.metric(key)
    if found.chart is None:
        return None
    base = next((key[len(p):] for p in metrics.VARIANT_PREFIXES if key.startswith(p)), key)
    color = COLORS.get(base, PALETTE[dynamic_index % len(PALETTE)])
    return CurveSpec(key, found.chart, color, scale=DISPLAY.get(found.unit, ("", 1.0))[1],
                     symbol="o" if found.sparse else None,
                     primary=key in PRIMARY,
                     dashed=key.startswith("baseline_"))


def percentile_lines(summary: dict) -> list[tuple[str, float, str]]:
    """(label, value in ms, colour) of the latency percentiles an infer summary carries."""
    figures = summary.get("figures") or {}
    out = []
    for base in ("ttft", "decode_latency"):
        for q in (50, 99):  # the median and the tail; p90 is in the summary table
            value = (figures.get(f"{base}_p{q}_s") or {}).get("value")
            if isinstance(value, (int, float)):
                name = "TTFT" if base == "ttft" else "decode"
                out.append((f"{name} p{q} {metrics.format_value(value, 's')}", value / MS,
                            COLORS[f"{base}_s"]))
    return out
