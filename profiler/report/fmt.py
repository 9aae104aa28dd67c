"""Numbers as people read them in a report: units always, "n/a" for a missing value."""

from __future__ import annotations

from profiler.metrics import CATALOGUE, format_value, is_missing

FIGURE_LABELS = {
    "tokens_per_s": "Throughput",
    "step_time_p50_s": "Step time p50",
    "step_time_p90_s": "Step time p90",
    "step_time_p99_s": "Step time p99",
    "loss_train_final": "Final train loss",
    "loss_val_first": "Validation loss before training",
    "loss_val_final": "Final validation loss",
    "peak_rss_bytes": "Peak process RSS",
    "peak_rss_growth_bytes": "RSS added by training",
    "peak_torch_allocated_bytes": "Peak torch allocated",
    "peak_gpu_memory_used_bytes": "Peak GPU memory (NVML)",
    "optimizer_state_bytes": "Optimizer state",
    "compile_time_s": "Compile time",
    "flops_per_token": "FLOPs per token",
    "mfu": "MFU (model FLOPs utilisation)",
    "train_time_s": "Training time",
    "eval_time_s": "Validation time",
    "tokens_seen": "Tokens seen",
    # inference and compression
    "decode_tokens_per_s": "Decode throughput",
    "prefill_tokens_per_s": "Prefill throughput",
    "model_bytes": "Weights in memory",
    "disk_bytes": "Weights on disk",
    "nonzero_parameters": "Non-zero parameters",
    "kv_cache_bytes": "KV cache",
    "loss_val": "Validation loss",
    "kl_to_baseline": "KL to the original model",
    "speedup_decode": "Decode speed-up",
    "perplexity_change_percent": "Perplexity change",
}
_UNIT_SUFFIXES = ("_s", "_bytes", "_percent", "_w", "_c")
_SI = (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


def figure_label(key: str) -> str:
    """A readable name: the table above, else the key without its unit suffix, with the
    compress workload's `baseline_` / `_ratio` forms spelled out."""
    if key in FIGURE_LABELS:
        return FIGURE_LABELS[key]
    if key.startswith("baseline_"):
        return f"{figure_label(key[len('baseline_'):])}, original model"
    if key.endswith("_ratio"):
        return f"{figure_label(key[:-len('_ratio')])}, compressed / original"
    stem = next((key[:-len(s)] for s in _UNIT_SUFFIXES if key.endswith(s)), key)
    words = stem.replace("_per_", "/").split("_")
    words = [{"ttft": "TTFT", "kv": "KV", "mfu": "MFU", "gpu": "GPU", "cpu": "CPU",
              "rss": "RSS"}.get(w, w) for w in words]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def metric_label(key: str) -> str:
    """The catalogue's label, or one made from the key for metrics the catalogue lacks."""
    return CATALOGUE[key].label if key in CATALOGUE else figure_label(key)


def metric_unit(key: str) -> str:
    """The catalogue's unit, or the one the key's name carries (`_s`, `_bytes`, `_per_s`)."""
    if key in CATALOGUE:
        return CATALOGUE[key].unit
    for suffix, unit in (("tokens_per_s", "tokens/s"), ("_bytes", "bytes"), ("_percent", "%"),
                         ("_s", "s"), ("_w", "W")):
        if key.endswith(suffix):
            return unit
    return ""


def fmt(value: object, unit: str = "", key: str = "") -> str:
    """One value with its unit; FLOPs with SI prefixes, counts with thousands separators."""
    if is_missing(value) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    if key == "mfu" or unit in ("ratio", "fraction"):
        return f"{value * 100:.1f} %"
    if unit == "x":
        return f"{value:.3g}×"
    if unit == "%":
        return f"{value:.1f} %"
    if unit in ("FLOP", "FLOP/s"):
        for prefix, scale in _SI:
            if abs(value) >= scale:
                return f"{value / scale:.3g} {prefix}{unit}"
        return f"{value:.3g} {unit}"
    if unit in ("tokens", "parameters", "steps"):
        return f"{value:,.0f} {unit}"
    if unit == "nats/token":
        return f"{value:.4f} nats/token"
    if unit == "" and isinstance(value, int):
        return f"{value:,}"
    return format_value(value, unit)


def fmt_delta(delta: float | None, unit: str, key: str = "") -> str:
    """A signed difference in the figure's own unit."""
    if delta is None:
        return "n/a"
    sign = "+" if delta > 0 else "−" if delta < 0 else "±"
    return sign + fmt(abs(delta), unit, key)


def fmt_pct(pct: float | None) -> str:
    if pct is None:
        return "n/a"
    if round(pct, 1) == 0:
        return "0.0 %"
    return f"{pct:+.1f} %".replace("-", "−")
