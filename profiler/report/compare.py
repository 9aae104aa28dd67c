"""Several runs against a baseline: the delta table and the config diff, as plain data.

The deltas are computed from the runs' summary figures only, so a comparison says exactly what
each run's own report says; perplexity is exp(final validation loss). Whether a delta is a
difference at all is profiler.significance's verdict (the same one the app and `effiscope compare`
show): "better" / "worse" only outside the noise of both runs, else "within noise".
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Any

from profiler import significance
from profiler.metrics import metric
from profiler.report.load import RunData

DELTA_KEYS = ("tokens_per_s", "step_time_p50_s", "step_time_p99_s",
              # memory: the parts a technique acts on first, then the process-wide peaks
              "saved_for_backward_bytes", "gradient_bytes", "optimizer_state_bytes",
              "peak_torch_allocated_bytes", "peak_gpu_memory_used_bytes", "peak_rss_bytes",
              "loss_train_final",
              "loss_val_final", "perplexity", "mfu", "mfu_measured",
              # inference and compression runs
              "ttft_p50_s", "decode_latency_p50_s", "decode_tokens_per_s", "model_bytes")
DELTA_ROWS: tuple[tuple[str, str, str, str | None], ...] = tuple(
    (key, metric(key).label, metric(key).unit, metric(key).better) for key in DELTA_KEYS)
"""(key, label, unit, which way is better), from the metric catalogue."""


def techniques_of(summary: dict) -> dict[str, str]:
    """{technique name: its parameters as JSON} of a run's summary (the configuration it ended
    in; a summary read from disk may be malformed: what cannot be read is left out)."""
    active = summary.get("active_techniques") if isinstance(summary, dict) else None
    if not isinstance(active, dict):
        listed = summary.get("techniques") if isinstance(summary, dict) else None
        active = {t["name"]: t.get("params") for t in listed or []
                  if isinstance(t, dict) and isinstance(t.get("name"), str)} \
            if isinstance(listed, list) else {}
    return {str(name): json.dumps(params, sort_keys=True, default=str)
            for name, params in active.items()}


def acted_on(summaries: list[dict]) -> list[str]:
    """The figures that the techniques these runs differ in act on (registry extra "acts_on"),
    in DELTA_KEYS order: what a comparison of them should show first."""
    from techniques import registry

    configs = [techniques_of(s) for s in summaries]
    names = set().union(*configs) if configs else set()
    keys: set[str] = set()
    for name in names:
        if len({config.get(name) for config in configs}) < 2:
            continue  # the same in every run
        try:
            keys.update(registry.get(name).extra.get("acts_on", ()))
        except registry.UnknownTechnique:
            continue
    return [key for key in DELTA_KEYS if key in keys]


def delta_rows(summaries: list[dict]) -> tuple[tuple[str, str, str, str | None], ...]:
    """DELTA_ROWS with the figures the compared runs' differing techniques act on first (e.g.
    the bytes saved for backward when one run checkpoints activations), the rest in order."""
    lead = acted_on(summaries)
    return tuple(sorted(DELTA_ROWS, key=lambda row: row[0] not in lead))


def row_value(run: RunData, key: str) -> float | None:
    if key == "perplexity":
        if run.figure("perplexity") is not None:  # infer / compress measure it directly
            return run.figure("perplexity")
        loss = run.figure("loss_val_final")
        if loss is None:
            return None
        try:
            return math.exp(loss)
        except OverflowError:
            return None
    return run.figure(key)


def change_pct(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return (value - base) / abs(base) * 100.0


def deltas(runs: list[RunData], baseline: RunData) -> list[dict]:
    """One row per figure: each run's value, its difference to the baseline, the % change and
    the verdict on it (significance.judge_runs; None for the baseline's own cell)."""
    rows = []
    samples: dict = {}
    for key, label, unit, better in delta_rows([baseline.summary] + [r.summary for r in runs]):
        base = row_value(baseline, key)
        cells = []
        for run in runs:
            value = row_value(run, key)
            delta = value - base if value is not None and base is not None else None
            verdict = p_value = None
            if run is not baseline and value is not None and base is not None:
                result = significance.judge_runs(key, better, baseline, run, samples)
                verdict, p_value = result["verdict"], result["p_value"]
            cells.append({"run": run.run_id, "value": value, "delta": delta,
                          "change_pct": change_pct(value, base), "verdict": verdict,
                          "p_value": p_value})
        rows.append({"key": key, "label": label, "unit": unit, "better": better,
                     "baseline": base, "cells": cells})
    return rows


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_diff(runs: list[RunData], baseline: RunData) -> dict:
    """Key by key (only keys that differ somewhere) and a unified diff of each config.toml."""
    flat = {run.run_id: flatten(run.config) for run in runs}
    keys = sorted({k for f in flat.values() for k in f})
    table = []
    for key in keys:
        values = [flat[run.run_id].get(key) for run in runs]
        if any(v != values[0] for v in values):
            table.append({"key": key, "values": [{"run": run.run_id, "value": v}
                                                 for run, v in zip(runs, values, strict=True)]})
    unified = []
    for run in runs:
        if run is baseline:
            continue
        text = "".join(difflib.unified_diff(
            baseline.config_text.splitlines(keepends=True), run.config_text.splitlines(keepends=True),
            fromfile=f"{baseline.run_id}/config.toml", tofile=f"{run.run_id}/config.toml"))
        unified.append({"run": run.run_id, "diff": text})
    return {"keys": table, "unified": unified}


def comparison(runs: list[RunData], baseline: RunData) -> dict:
    return {"baseline": baseline.run_id, "deltas": deltas(runs, baseline),
            "config_diff": config_diff(runs, baseline)}
