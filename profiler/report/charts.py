"""Which charts a report draws, built from the stored series (one run, or several overlaid)."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.figures.metrics import CHARTS, ORDER, known, metric
from profiler.report.load import RunData
from profiler.report.svg import PALETTE, Band, Chart, Line, Marker


@dataclass(frozen=True)
class ChartSpec:
    title: str
    unit: str
    keys: tuple[str, ...]
    from_zero: bool = True
    name: str = ""
    """The catalogue chart (profiler.figures.metrics.CHARTS) it draws; "" for a chart of other metrics."""


CORE_CHARTS = {chart.name for chart in CHARTS if chart.core}
"""Drawn in a comparison even when no run has a reading for them."""


def _order(key: str) -> tuple[int, str]:
    return ORDER.get(key, len(ORDER)), key


def chart_specs(runs: list[RunData]) -> list[ChartSpec]:
    """The catalogue's charts that any run has metrics for, in the catalogue's routing, then the
    other recorded metrics: catalogued ones share a chart by group and unit, others get one each."""
    present = sorted({k for run in runs for k in run.series}, key=_order)
    specs = []
    for chart in CHARTS:
        # Drawn when the runs sent any of its metrics: a train run's GPU memory as null still
        # gets its "n/a"; an inference run has no step time to show at all.
        keys = tuple(k for k in present if metric(k).chart == chart.name)
        if keys:
            specs.append(ChartSpec(chart.title, chart.unit, keys, chart.from_zero, chart.name))
    groups: dict[tuple[str, str], list[str]] = {}
    for key in present:
        if metric(key).chart is not None or not any(
                key in run.series and run.series[key].has_data() for run in runs):
            continue
        group = metric(key).group if known(key) else key
        groups.setdefault((group, metric(key).unit), []).append(key)
    for (group, unit), keys in groups.items():
        title = metric(keys[0]).label if len(keys) == 1 else group.capitalize()
        specs.append(ChartSpec(title, unit, tuple(keys)))
    return specs


def overlay_specs(runs: list[RunData]) -> list[ChartSpec]:
    """As chart_specs, but a multi-metric chart other than loss becomes one chart per metric:
    runs × metrics lines in one chart would be unreadable."""
    out = []
    for spec in chart_specs(runs):
        if spec.name == "loss" or len(spec.keys) == 1:
            out.append(spec)
            continue
        for key in spec.keys:
            if any(key in run.series and run.series[key].has_data() for run in runs):
                out.append(ChartSpec(metric(key).label, spec.unit, (key,), spec.from_zero))
    return out


def _ranges(steps: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for step in steps:
        if out and step == out[-1][1] + 1:
            out[-1] = (out[-1][0], step)
        else:
            out.append((step, step))
    return out


def bands(run: RunData) -> list[Band]:
    compile_steps = set(run.compile_steps())
    warm = [s for s in run.warmup_steps() if s not in compile_steps]
    return ([Band(a, b, "compile") for a, b in _ranges(sorted(compile_steps))]
            + [Band(a, b, "warmup") for a, b in _ranges(warm)])


def toggle_markers(run: RunData, color: str = "#374151") -> list[Marker]:
    out = []
    for event in run.events_of("toggle"):
        step = event.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            continue
        params = event.get("params") if isinstance(event.get("params"), dict) else {}
        what = ", ".join(f"{k}={v}" for k, v in params.items())
        label = f"{event.get('technique') or 'toggle'}" + (f" {what}" if what else "")
        out.append(Marker(step, label, color))
    return out


def x_label(runs: list[RunData]) -> str:
    """Train steps, or timed generations for inference and compression runs."""
    workloads = {run.config.get("workload") or run.run_info.get("workload") for run in runs}
    return "generation" if workloads and workloads <= {"infer", "compress"} else "step"


def missing_keys(run: RunData, spec: ChartSpec) -> list[str]:
    """Metrics of this chart that the run sent only as null (e.g. GPU memory on a CPU run)."""
    return [k for k in spec.keys if k in run.series and not run.series[k].has_data()]


def run_chart(run: RunData, spec: ChartSpec) -> Chart:
    lines = []
    for index, key in enumerate(spec.keys):
        series = run.series.get(key)
        if series is None or not series.has_data():
            continue
        lines.append(Line(series.label, list(zip(series.steps, series.values, strict=True)),
                          PALETTE[index % len(PALETTE)], dots=metric(key).sparse))
    return Chart(spec.title, spec.unit, lines, bands(run), toggle_markers(run),
                 x_label=x_label([run]), from_zero=spec.from_zero)


def overlay_chart(runs: list[RunData], names: dict[str, str], spec: ChartSpec) -> Chart:
    """One colour per run; a chart's second metric (validation loss) is dashed."""
    lines = []
    markers = []
    for index, run in enumerate(runs):
        color = PALETTE[index % len(PALETTE)]
        for position, key in enumerate(spec.keys):
            series = run.series.get(key)
            if series is None or not series.has_data():
                continue
            label = names[run.run_id] + (f" · {series.label}" if len(spec.keys) > 1 else "")
            lines.append(Line(label, list(zip(series.steps, series.values, strict=True)), color,
                              dots=metric(key).sparse, dashed=position > 0))
        markers.extend(toggle_markers(run, color))
    shared = {tuple((b.x0, b.x1, b.label) for b in bands(run)) for run in runs}
    common_bands = bands(runs[0]) if len(shared) == 1 else []
    return Chart(spec.title, spec.unit, lines, common_bands, markers, x_label=x_label(runs),
                 from_zero=spec.from_zero)
