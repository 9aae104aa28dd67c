"""Which charts a report draws, built from the stored series (one run, or several overlaid)."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.metrics import CATALOGUE, metric
from profiler.report.fmt import metric_label, metric_unit
from profiler.report.load import RunData
from profiler.report.svg import PALETTE, Band, Chart, Line, Marker


@dataclass(frozen=True)
class ChartSpec:
    title: str
    unit: str
    keys: tuple[str, ...]
    from_zero: bool = True


MAIN_CHARTS = (
    ChartSpec("Loss", "nats/token", ("loss_train", "loss_val"), from_zero=False),
    ChartSpec("Throughput", "tokens/s", ("tokens_per_s",)),
    ChartSpec("Step time", "s", ("step_time_s",)),
    ChartSpec("Memory", "bytes", ("rss_bytes", "torch_allocated_bytes", "torch_reserved_bytes",
                                  "torch_peak_allocated_bytes", "gpu_process_memory_bytes",
                                  "gpu_memory_used_bytes")),
)
SPARSE = ("loss_val",)  # evaluated every N steps: drawn with dots


def _latency_keys(runs: list[RunData]) -> tuple[str, ...]:
    keys = {k for run in runs for k in run.series
            if "latency" in k or "ttft" in k or metric(k).group == "latency"}
    return tuple(sorted(keys))


def chart_specs(runs: list[RunData]) -> list[ChartSpec]:
    """The main charts, latency when any run has it, then the other recorded metrics by group."""
    specs = list(MAIN_CHARTS)
    latency = _latency_keys(runs)
    if latency:
        specs.append(ChartSpec("Latency", "s", latency))
    # A main chart is drawn when the runs sent any of its metrics (a train run's GPU memory as
    # null still gets its "n/a"); an inference run has no step time to show at all.
    specs = [s for s in specs if any(k in run.series for run in runs for k in s.keys)]
    used = {k for spec in specs for k in spec.keys}
    groups: dict[tuple[str, str], list[str]] = {}
    for run in runs:
        for key, series in run.series.items():
            if key in used or not series.has_data():
                continue
            # Catalogued metrics share a chart by group and unit; others get one chart each.
            group = metric(key).group if key in CATALOGUE else key
            bucket = groups.setdefault((group, metric_unit(key)), [])
            if key not in bucket:
                bucket.append(key)
    for (group, unit), keys in groups.items():
        title = metric_label(keys[0]) if len(keys) == 1 else group.capitalize()
        specs.append(ChartSpec(title, unit, tuple(keys)))
    return specs


def overlay_specs(runs: list[RunData]) -> list[ChartSpec]:
    """As chart_specs, but a multi-metric chart other than loss becomes one chart per metric:
    runs × metrics lines in one chart would be unreadable."""
    out = []
    for spec in chart_specs(runs):
        if spec.keys == MAIN_CHARTS[0].keys or len(spec.keys) == 1:
            out.append(spec)
            continue
        for key in spec.keys:
            if any(key in run.series and run.series[key].has_data() for run in runs):
                out.append(ChartSpec(metric_label(key), spec.unit, (key,), spec.from_zero))
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
                          PALETTE[index % len(PALETTE)], dots=key in SPARSE))
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
                              dots=key in SPARSE, dashed=position > 0))
        markers.extend(toggle_markers(run, color))
    shared = {tuple((b.x0, b.x1, b.label) for b in bands(run)) for run in runs}
    common_bands = bands(runs[0]) if len(shared) == 1 else []
    return Chart(spec.title, spec.unit, lines, common_bands, markers, x_label=x_label(runs),
                 from_zero=spec.from_zero)
