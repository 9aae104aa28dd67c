"""Which chart draws which metric: the eight charts and the rules that route a sample's keys.

Known keys have a fixed colour; keys a newer workload adds (a compress run's `baseline_ttft_s`,
a parallel run's `rank1_step_time_s`) are routed by their unit suffix, so they are drawn without
a change here. Keys that fit no chart (learning rate, CPU %) stay in the summary table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from profiler.metrics import CATALOGUE, metric

MIB = 2.0**20
MS = 1e-3


@dataclass(frozen=True)
class ChartSpec:
    name: str
    title: str
    y_label: str
    zero_based: bool
    """An invisible point at 0 keeps zero in view: a 10 MiB wobble should look like one."""
    core: bool
    """Shown while there is no data at all (an empty window still says what it will draw)."""


CHARTS = (
    ChartSpec("loss", "Loss", "nats/token", False, True),
    ChartSpec("speed", "Throughput", "tokens/s", True, True),
    ChartSpec("step_time", "Step time", "ms", True, True),
    ChartSpec("memory", "Memory", "MiB", True, True),
    ChartSpec("latency", "Latency", "ms", True, False),
    ChartSpec("gpu_util", "GPU utilization", "%", True, False),
    ChartSpec("gpu_power", "GPU power", "W", True, False),
    ChartSpec("gpu_temp", "GPU temperature", "°C", False, False),
)
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

    @property
    def label(self) -> str:
        if self.key in CATALOGUE:
            return metric(self.key).label
        rank = _RANK.match(self.key)
        if rank and rank[2] in CATALOGUE:  # a parallel job's per-rank reading
            name = metric(rank[2]).label
            return f"Rank {rank[1]} {name[:1].lower() + name[1:] if not name[1:2].isupper() else name}"
        text = self.key
        for suffix in ("_bytes", "_s", "_percent", "_w", "_c"):
            text = text.removesuffix(suffix)
        text = text.replace("ttft", "TTFT").replace("_", " ")
        return text[:1].upper() + text[1:]


KNOWN = (
    CurveSpec("loss_train", "loss", "#2563eb", primary=True),
    CurveSpec("loss_val", "loss", "#ea580c", symbol="o", primary=True),
    CurveSpec("tokens_per_s", "speed", "#059669", primary=True),
    CurveSpec("decode_tokens_per_s", "speed", "#0d9488", primary=True),
    CurveSpec("step_time_s", "step_time", "#0369a1", scale=MS, primary=True),
    CurveSpec("rss_bytes", "memory", "#7c3aed", scale=MIB, primary=True),
    CurveSpec("torch_allocated_bytes", "memory", "#db2777", scale=MIB),
    CurveSpec("torch_reserved_bytes", "memory", "#0891b2", scale=MIB),
    CurveSpec("gpu_process_memory_bytes", "memory", "#65a30d", scale=MIB),
    CurveSpec("gpu_memory_used_bytes", "memory", "#a16207", scale=MIB),
    CurveSpec("ttft_s", "latency", "#dc2626", scale=MS, primary=True),
    CurveSpec("prefill_latency_s", "latency", "#9333ea", scale=MS),
    CurveSpec("decode_latency_s", "latency", "#0284c7", scale=MS),
    CurveSpec("gpu_util_percent", "gpu_util", "#16a34a", primary=True),
    CurveSpec("gpu_power_w", "gpu_power", "#ca8a04", primary=True),
    CurveSpec("gpu_temperature_c", "gpu_temp", "#e11d48", primary=True),
)
KNOWN_BY_KEY = {spec.key: spec for spec in KNOWN}
SKIPPED = {"torch_peak_allocated_bytes"}
"""A running peak repeats what the allocated curve already shows."""
PALETTE = ("#4f46e5", "#c2410c", "#0f766e", "#be185d", "#4d7c0f", "#b45309", "#1d4ed8",
           "#7e22ce", "#0e7490", "#b91c1c")
RUN_COLORS = ("#111827", "#d946ef", "#fb923c", "#22d3ee", "#57534e", "#78350f", "#365314",
              "#a3a3a3")
"""Compared runs, one colour each across every chart, none close to a live curve's colour
(Process RSS is violet: an overlay never is); overlays are also drawn dashed."""

_PERCENTILE = re.compile(r"_p\d\d_s$")
_RANK = re.compile(r"^rank(\d+)_(.+)$")


def route(key: str, dynamic_index: int = 0) -> CurveSpec | None:
    """The curve for a metric key, or None when no chart draws it."""
    known = KNOWN_BY_KEY.get(key)
    if known is not None:
        return known
    if key in SKIPPED:
        return None
    color = PALETTE[dynamic_index % len(PALETTE)]
    if key.endswith(("loss_train", "loss_val")):
        return CurveSpec(key, "loss", color, symbol="o" if key.endswith("val") else None)
    if key.endswith("tokens_per_s"):
        return CurveSpec(key, "speed", color)
    if key.endswith("step_time_s"):
        return CurveSpec(key, "step_time", color, scale=MS)
    if key.endswith(("latency_s", "ttft_s")) or _PERCENTILE.search(key):
        return CurveSpec(key, "latency", color, scale=MS)
    if key.endswith("_bytes") and (key.startswith(("rank", "torch_", "gpu_")) or "rss" in key
                                   or "cache" in key):
        return CurveSpec(key, "memory", color, scale=MIB)
    return None


def percentile_lines(summary: dict) -> list[tuple[str, float, str]]:
    """(label, value in ms, colour) of the latency percentiles an infer summary carries."""
    figures = summary.get("figures") or {}
    out = []
    for base, spec in (("ttft", KNOWN_BY_KEY["ttft_s"]),
                       ("decode_latency", KNOWN_BY_KEY["decode_latency_s"])):
        for q in (50, 99):  # the median and the tail; p90 is in the summary table
            value = (figures.get(f"{base}_p{q}_s") or {}).get("value")
            if isinstance(value, (int, float)):
                name = "TTFT" if base == "ttft" else "decode"
                out.append((f"{name} p{q} {value / MS:.3g} ms", value / MS, spec.color))
    return out
