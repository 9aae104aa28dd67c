"""Recommendations drawn from a run's own data: each rule cites the numbers that triggered it.

A rule that lacks its inputs (a CPU run has no GPU utilisation, a killed run has no summary)
stays silent rather than guessing. Severity "warning" means the figures are probably misleading
or the run is at risk; "info" means there is likely something to gain.
"""

from __future__ import annotations

import math

from profiler.figures.metrics import format_figure, format_value, metric
from profiler.figures.stats import percentile, ratio_cell
from profiler.report.load import RunData, sample_readings

STALL_RATIO = 3.0            # p99 / p50 step time above this: stalls
OPTIMIZER_TO_WEIGHTS = 1.5   # optimizer state / weight bytes above this: a heavy optimizer
OPTIMIZER_SHARE_OF_PEAK = 0.1  # ... and only when it is a real part of the peak memory
GAP_GROWTH_NATS = 0.02       # widening of the val - train gap over the last evaluations
QUALITY_COST_WARN_PCT = 5.0  # perplexity increase after compression worth a warning
GPU_UTIL_LOW_PCT = 50.0


def _rec(rule: str, severity: str, title: str, detail: str) -> dict:
    return {"id": rule, "severity": severity, "title": title, "detail": detail}


def precision_left_unused(run: RunData) -> dict | None:
    """On a CUDA GPU with bf16, fp32 matmuls leave tensor-core speed and memory unused."""
    if not run.device.startswith("cuda"):
        return None
    caps = run.capabilities
    bf16 = caps.get("bf16", run.environment["device"].get("bf16"))
    if not bf16:
        return None
    active = run.summary.get("active_techniques") or {}
    dtype = (active.get("precision") or {}).get("dtype") if "precision" in active else "fp32"
    toggled = [t for t in run.events_of("toggle") if t.get("technique") == "precision"]
    if toggled:
        dtype = (toggled[-1].get("params") or {}).get("dtype", dtype)
    if dtype not in (None, "fp32"):
        return None
    return _rec("precision", "info", "bf16 mixed precision is available but unused",
                f"This run trained in fp32 on {run.device}, which supports bf16. Enabling the "
                "mixed precision technique (dtype = bf16) usually raises tokens/s on tensor-core "
                "GPUs and halves activation memory; compare the two runs before adopting it.")


def overfitting(run: RunData) -> dict | None:
    """Validation loss pulling away from train loss over the last evaluations."""
    val = run.series.get("loss_val")
    train = run.series.get("loss_train")
    if val is None or train is None:
        return None
    gaps = _stream_gaps(run) if val.decimated or train.decimated else _gaps(val, train)
    last = gaps[-3:]
    if len(last) < 3:
        return None
    widening = all(b[1] > a[1] for a, b in zip(last, last[1:], strict=False))
    growth = last[-1][1] - last[0][1]
    if not widening or growth < GAP_GROWTH_NATS or last[-1][1] <= 0:
        return None
    steps = ", ".join(str(s) for s, _ in last)
    gap_text = " → ".join(f"{g:+.3f}" for _, g in last)
    return _rec("overfitting", "warning", "Train / validation gap is widening (overfitting risk)",
                f"Validation minus train loss at steps {steps}: {gap_text} nats/token. The model "
                "is fitting the training text faster than it generalises: add data, dropout or "
                "weight decay, or stop earlier (the best validation loss so far is "
                f"{min(v for _, v in val.present()):.3f} nats/token).")


def _gaps(val, train) -> list[tuple[int, float]]:
    """(step, validation loss minus the mean train loss since the previous evaluation)."""
    train_points = train.present()
    gaps = []
    previous_step = -1
    for step, val_loss in val.present():
        window = [v for s, v in train_points if previous_step < s <= step]
        previous_step = step
        if window and step > 0:
            gaps.append((step, val_loss - sum(window) / len(window)))
    return gaps


def _stream_gaps(run: RunData) -> list[tuple[int, float]]:
    """_gaps of a run whose series were reduced for drawing: from its stream, in one pass
    holding a running train-loss sum (memory: one entry per evaluation)."""
    gaps, total, count = [], 0.0, 0
    for message in run.messages():
        if message.get("type") != "sample":
            continue
        readings = {key: (step, value) for key, step, _, _, value in
                    sample_readings(message) or ()}
        step, train_loss = readings.get("loss_train", (None, None))
        if train_loss is not None:
            total, count = total + train_loss, count + 1
        step, val_loss = readings.get("loss_val", (None, None))
        if val_loss is not None:
            if count and step > 0:
                gaps.append((step, val_loss - total / count))
            total, count = 0.0, 0
    return gaps


def _median_percent(run: RunData, key: str) -> float | None:
    """The median of a percentage series after step 0, exact to 0.1 %: from the series, or
    for a series reduced for drawing from a histogram of its stream (bounded memory)."""
    series = run.series.get(key)
    if series is None:
        return None
    if not series.decimated:
        return percentile([v for s, v in series.present() if s > 0], 50)
    bins = [0] * 1001
    for message in run.messages():
        if message.get("type") != "sample":
            continue
        for found, step, _, _, value in sample_readings(message) or ():
            if found == key and value is not None and step > 0:
                bins[min(1000, max(0, round(value * 10)))] += 1
    total = sum(bins)
    if not total:
        return None
    seen = 0
    for tenth, n in enumerate(bins):
        seen += n
        if seen * 2 >= total:
            return tenth / 10
    return None


def heavy_optimizer(run: RunData) -> dict | None:
    """Optimizer state several times the weights: a lighter optimizer or sharding frees it."""
    state = run.figure("optimizer_state_bytes")
    params = run.summary.get("parameters") or (run.run_info.get("model") or {}).get("parameters")
    if state is None or not isinstance(params, int) or params <= 0:
        return None
    weights = params * 4  # the built-in models keep fp32 master weights
    ratio = state / weights
    if ratio < OPTIMIZER_TO_WEIGHTS:
        return None
    peak = run.figure("peak_torch_allocated_bytes") or run.figure("peak_rss_growth_bytes")
    if peak and state / peak < OPTIMIZER_SHARE_OF_PEAK:
        return None  # activations or caches dominate: the optimizer is not where memory goes
    share = f", {state / peak:.0%} of the peak memory training added" if peak else ""
    return _rec("optimizer_memory", "info", "Optimizer state is large next to the weights",
                f"The optimizer keeps {format_value(state, 'bytes')} of state for "
                f"{format_value(weights, 'bytes')} of fp32 weights ({ratio:.1f}×{share}). "
                "SGD with momentum keeps one state per parameter instead of two; with several "
                "GPUs, FSDP / ZeRO sharding splits the state across them.")


def stalls(run: RunData) -> dict | None:
    """A long tail of step times means the loop waits on something other than compute."""
    p50, p99 = run.figure("step_time_p50_s"), run.figure("step_time_p99_s")
    if p50 is None or p99 is None or p50 <= 0 or p99 / p50 < STALL_RATIO:
        return None
    return _rec("stalls", "warning", "Step time has a long tail (stalls)",
                f"p99 step time {format_value(p99, 's')} is {p99 / p50:.1f}× the median "
                f"{format_value(p50, 's')}. Look for data loading, garbage collection, "
                "checkpoint writes or other processes sharing the machine; tokens/s from this "
                "run understate what the hardware can do.")


def gpu_idle(run: RunData) -> dict | None:
    if not run.device.startswith("cuda"):
        return None
    median = _median_percent(run, "gpu_util_percent")
    if median is None or median >= GPU_UTIL_LOW_PCT:
        return None
    return _rec("gpu_idle", "info", "The GPU is idle much of the time",
                f"Median GPU utilisation was {median:.0f} %. Larger batches, torch.compile or "
                "fewer host-device synchronisations keep it busier.")


def _number(value: object) -> float | None:
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def compression_rows(run: RunData) -> dict[str, dict]:
    """The compress workload's baseline / compressed rows by key ({} for other workloads)."""
    rows = run.summary.get("comparison")
    if not isinstance(rows, list):
        return {}
    return {r["key"]: r for r in rows if isinstance(r, dict) and isinstance(r.get("key"), str)}


def compression_cells(key: str, row: dict) -> tuple[str, str, str, str]:
    """One comparison row as text: measure, original, compressed, compressed / original."""
    return (metric(key).label, format_figure(key, row.get("baseline"), str(row.get("unit", ""))),
            format_figure(key, row.get("compressed"), str(row.get("unit", ""))),
            ratio_cell(row))


def compression_cost(run: RunData) -> dict | None:
    """The quality a compression cost, from the compress workload's comparison rows."""
    rows = compression_rows(run)
    ppl = rows.get("perplexity") or {}
    ppl_base, ppl_comp = _number(ppl.get("baseline")), _number(ppl.get("compressed"))
    if ppl_base is None or ppl_comp is None or ppl_base <= 0:
        return None
    change = (ppl_comp - ppl_base) / ppl_base * 100
    size = ""
    memory = rows.get("model_bytes") or {}
    size_base, size_comp = _number(memory.get("baseline")), _number(memory.get("compressed"))
    if size_base and size_comp:
        size = f" for weights at {size_comp / size_base:.0%} of the original bytes"
    severity = "warning" if change > QUALITY_COST_WARN_PCT else "info"
    advice = ("Above a few percent, try a gentler setting (lower sparsity, int8 rather than "
              "int4) or fine-tune after compressing." if change > QUALITY_COST_WARN_PCT else
              "A small cost: check it on your own evaluation text before shipping.")
    return _rec("compression_quality", severity, "Quality cost of the compression",
                f"Perplexity went from {ppl_base:.3f} to {ppl_comp:.3f} ({change:+.1f} %)"
                f"{size}. {advice}")


def too_few_measured(run: RunData) -> dict | None:
    measured = run.summary.get("measured_steps")
    if run.status != "completed" or not isinstance(measured, int) or measured >= 10:
        return None
    if run.summary.get("workload") in ("infer", "compress"):
        what, setting = "timed generations", "infer.repeats"
    else:
        what, setting = "steps", "limits.steps"
    return _rec("few_steps", "warning", f"Few measured {what}",
                f"Only {measured} {what} were measured after warmup: the speed figures carry "
                f"wide error bars. Raise {setting} for figures worth comparing.")


RULES = (precision_left_unused, overfitting, heavy_optimizer, stalls, gpu_idle,
         compression_cost, too_few_measured)


def recommendations(run: RunData) -> list[dict]:
    """Every rule's finding for this run, warnings first."""
    found = [r for rule in RULES if (r := rule(run)) is not None]
    return sorted(found, key=lambda r: r["severity"] != "warning")
