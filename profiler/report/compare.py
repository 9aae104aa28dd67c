"""Several runs against a baseline: the delta table, the settings diff and the machine each run
was measured on, as plain data. The app's Compare, `effiscope compare` and the reports all draw
these rows, so they say the same thing.

Each cell's value, difference and verdict come from profiler.figures.significance.judge, the one verdict
rule: like with like (a run that changed techniques mid-run is read on its segment with the
other's configuration, final losses at one step), no verdict on a timed figure from a busy
machine, "significant" only outside both runs' noise and beyond the noise floor, and otherwise
the reason. Perplexity is exp(final validation loss) unless measured.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from profiler.figures import busy, segment_pairing, significance
from profiler.figures.metrics import metric

DELTA_KEYS = ("tokens_per_s", "step_time_p50_s", "step_time_p99_s",
              # memory: the parts a technique acts on first, then the process-wide peaks
              "saved_for_backward_bytes", "gradient_bytes", "optimizer_state_bytes",
              "peak_torch_allocated_bytes", "peak_gpu_memory_used_bytes", "peak_rss_bytes",
              "loss_train_final", "loss_distill_final",
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


def row_value(run, key: str) -> float | None:
    """A run's headline value of a figure (the configuration it ended in)."""
    return significance.segment_value(key, run.summary, None)


def change_pct(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return (value - base) / abs(base) * 100.0


def deltas(runs: list, baseline, cache: dict | None = None) -> list[dict]:
    """One row per figure: the baseline's headline value, and per run the figures compared (a
    run's segment with the other's configuration where one changed techniques mid-run: then
    base_value may be a segment of the baseline), the difference, the % change and the verdict
    with its reason and words (significance.judge; None for the baseline's own cell or a
    missing value). `cache` keeps each run's significance.Evidence by run id."""
    cache = {} if cache is None else cache
    pairs = {run.run_id: segment_pairing.pairing(baseline.summary, run.summary) for run in runs
             if run is not baseline}
    rows = []
    for key, label, unit, better in delta_rows([baseline.summary] + [r.summary for r in runs]):
        base = row_value(baseline, key)
        cells = []
        for run in runs:
            cell = {"run": run.run_id, "value": row_value(run, key), "base_value": base,
                    "delta": None, "change_pct": None, "verdict": None, "reason": "",
                    "text": "", "p_value": None, "method": "", "scope": ""}
            if run is not baseline:
                result = significance.judge(key, better, baseline, run, cache,
                                            pair=pairs[run.run_id])
                value, against = result["value"], result["base_value"]
                cell.update(value=value, base_value=against, scope=result["scope"])
                if value is not None and against is not None:
                    cell.update(delta=value - against, change_pct=change_pct(value, against),
                                verdict=result["verdict"], reason=result["reason"],
                                text=significance.verdict_text(result),
                                p_value=result["p_value"], method=result.get("method", ""))
            cells.append(cell)
        rows.append({"key": key, "label": label, "unit": unit, "better": better,
                     "baseline": base, "cells": cells})
    return rows


def machine(summary: dict) -> dict:
    """The machine a run was measured on, said beside its figures: {"busy": bool, "text":
    "busy: other processes used 1.7 of 2 cores during this run ..." / "quiet: other processes
    0.05 cores ..." / "not recorded"}."""
    sentence, load = busy.sentence(summary), busy.load_text(summary)
    if sentence:
        return {"busy": True, "text": f"busy: {sentence}" + (f" ({load})" if load else "")}
    if load:
        return {"busy": False, "text": f"quiet: {load}"}
    return {"busy": False, "text": "not recorded (the summary holds no contention readings: a "
                                   "run shorter than the meter's first second, or from before it)"}


def segment_lines(runs: list) -> list[dict]:
    """Each run's segments, for the settings diff: [{"run", "segments": ["1: steps 1..20, from
    the start: optimizer (...)", ...]}] for the runs that changed techniques mid-run."""
    out = []
    for run in runs:
        parts = run.summary.get("segments") if isinstance(run.summary, dict) else None
        if not isinstance(parts, list) or len(parts) < 2:
            continue
        configs = segment_pairing.configurations(run.summary) or [None] * len(parts)
        lines = []
        for part, config in zip(parts, configs, strict=False):
            if not isinstance(part, dict):
                continue
            text = segment_pairing.segment_name(part, len(parts))
            lines.append(text + (f": {segment_pairing.configuration_text(config)}"
                                 if config is not None else ""))
        out.append({"run": run.run_id, "segments": lines})
    return out


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


NOT_SETTINGS = ("name", "output_dir")
"""Config keys that are no setting: the run's name (shown as it is now, from the store, not as
config.toml recorded it) and the folder the front end chose."""


def relevant(config: dict, workloads: set[str]) -> dict:
    """The settings of a config that the compared runs' workloads read (config.SECTIONS_READ):
    a train-against-train diff lists no distill teacher or inference setting neither run used."""
    from profiler.config import CALIBRATING, SECTIONS_READ, WORKLOADS

    sections: set[str] = set()
    for workload in workloads:
        sections.update(SECTIONS_READ.get(workload, ()))
    if not workloads & set(WORKLOADS):
        sections.update(s for read in SECTIONS_READ.values() for s in read)
    techniques = config.get("techniques") if isinstance(config.get("techniques"), dict) else {}
    if any(name in techniques for name in CALIBRATING):
        sections.add("train")
    return {k: v for k, v in config.items() if k not in NOT_SETTINGS
            and (not isinstance(v, dict) or k in sections)}


def _workload(run) -> str:
    return str(run.config.get("workload") or run.summary.get("workload") or "train")


def config_diff(runs: list, baseline, names: dict[str, str] | None = None) -> dict:
    """The settings that differ (only those the runs' workloads read), each run's segments where
    one changed techniques mid-run, and a unified diff of those settings as TOML, headed by the
    runs' current names."""
    import tomli_w

    names = names or {run.run_id: run.name for run in runs}
    workloads = {_workload(run) for run in runs}
    kept = {run.run_id: relevant(run.config, workloads) for run in runs}
    flat = {run_id: flatten(config) for run_id, config in kept.items()}
    keys = sorted({k for f in flat.values() for k in f})
    differ = {k: [flat[run.run_id].get(k) for run in runs] for k in keys}
    differ = {k: v for k, v in differ.items() if any(x != v[0] for x in v)}

    def covered(key: str, values: list) -> bool:
        """An empty section ({}) against an absent one is no difference when a setting under
        it says what differs (no `techniques {}` row beside `techniques.tf32`); a technique
        switched on without parameters is one."""
        return {} in values and any(k.startswith(key + ".") for k in differ)

    table = [{"key": key, "values": [{"run": run.run_id, "value": v}
                                     for run, v in zip(runs, values, strict=True)]}
             for key, values in differ.items() if not covered(key, values)]

    def toml(run) -> list[str]:
        try:
            return tomli_w.dumps(kept[run.run_id]).splitlines(keepends=True)
        except (TypeError, ValueError):  # a config that does not round-trip: its text as read
            return run.config_text.splitlines(keepends=True)

    unified = []
    for run in runs:
        if run is baseline:
            continue
        text = "".join(difflib.unified_diff(
            toml(baseline), toml(run), fromfile=f"{names[baseline.run_id]} (baseline)",
            tofile=names[run.run_id]))
        unified.append({"run": run.run_id, "diff": text})
    return {"keys": table, "segments": segment_lines(runs), "unified": unified}


def comparison(runs: list, baseline, cache: dict | None = None) -> dict:
    """The delta rows, each run's machine and the settings diff (`cache`: see deltas)."""
    return {"baseline": baseline.run_id, "deltas": deltas(runs, baseline, cache),
            "machine": {run.run_id: machine(run.summary) for run in runs},
            "config_diff": config_diff(runs, baseline)}
