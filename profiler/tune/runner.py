"""Trials as real short runs, the final interleaved re-measure, and the tune run that groups them.

Torch-free (the CLI and the app drive it): every trial is a worker run recorded in the store
like any other (stream, summary, worker log), named "tune ... #N", tagged `tune:<tune run id>`;
the tune run's own folder holds tune.json (every trial, every pruned candidate, the final
comparison), tune.md (the table) and best.toml (the chosen config, runnable with `effiscope run`).

Each trial's figure is the worker's own summary figure: the median over the measured steps with
its 95 % interval, warmup (and so the compile step) excluded. The final answer is re-measured:
the best, the runner-up and the config as given, interleaved round by round (bench.loop's
rotation), each with the steps of the last rung; their per-step samples are judged by
profiler.figures.significance's one verdict rule (Mann-Whitney and the bootstrap ratio must agree, the
difference must pass the noise floor, and no verdict when a trial's machine was busy).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from profiler import files
from profiler.config import RunConfig
from profiler.figures import busy, metrics, significance, stats
from profiler.figures.evidence import run_samples
from profiler.tune import report as report_of
from profiler.tune import search as tsearch
from profiler.tune.space import Candidate, Space, checked_config

OBJECTIVES = {
    "train": {"tokens_per_s": "tokens_per_s", "step_time_p50_s": "step_time_s"},
    "infer": {"decode_tokens_per_s": "decode_tokens_per_s",
              "prefill_tokens_per_s": "prefill_tokens_per_s", "ttft_p50_s": "ttft_s"},
}
"""Per workload: the summary figure a search may optimise -> its per-step (per-generation)
sample in the stream, which the final verdict reads."""
DEFAULT_OBJECTIVE = {"train": "tokens_per_s", "infer": "decode_tokens_per_s"}
COMPILE_WARMUP_STEPS = 5
"""Warmup of a trial with torch.compile: its first steps compile (forward, backward, and a
recompile when shapes or grad modes change); on CPU a 3-step warmup still left compile time in
the measured steps."""
MARGIN_FRACTION = 0.10
MIN_MARGIN_BYTES = 512 * 2**20
MARGIN_HOW = (f"{MARGIN_FRACTION * 100:.0f} % of it, at least {MIN_MARGIN_BYTES // 2**20} MiB, kept back "
              "for what the prediction leaves out (allocator caching, workspaces, the CUDA "
              "context or the worker's own Python and torch)")


class TuneError(ValueError):
    """A tune that cannot start; the text says what to change."""


@dataclass
class Settings:
    budget_s: float = 900.0
    """Seconds of trials (start-up included) the search may spend; the final re-measure gets
    what is left, at least one round."""
    memory_limit: float | None = None
    """Bytes a candidate's predicted peak may reach; None = the device's free memory minus the
    margin (CPU: the available RAM)."""
    objective: str = ""
    """A summary figure of OBJECTIVES; empty = the workload's default."""
    dims: dict | None = None
    """space.parse_space's result: {dimension: values or None}; None = every dimension."""
    min_steps: int = 6
    """Measured steps of a first-rung trial: 6 is the fewest with a 95 % interval."""
    eta: int = 3
    max_steps: int = 54
    final_rounds: int = 3
    """At most this many interleaved rounds of the final re-measure (budget permitting)."""
    workers: str = ""
    """Where trials run, several at once (tune.devices.parse_workers: gpus, cpus:2, hosts);
    empty = this machine, one trial at a time."""
    segments: bool = True
    """Candidates that differ only in what a running worker switches are measured as segments
    of one warm run; False = a run per candidate (what the benchmark compares against)."""


def objective_of(config: RunConfig, objective: str) -> tuple[str, str, bool]:
    """(summary figure, sample key, higher is better) for a config's workload."""
    if config.workload not in OBJECTIVES:
        raise TuneError(f"workload = {config.workload}: tune searches train and infer runs; "
                        "set workload to train or infer")
    objective = objective or DEFAULT_OBJECTIVE[config.workload]
    choices = OBJECTIVES[config.workload]
    if objective not in choices:
        raise TuneError(f"--objective: {objective!r} is not a figure a {config.workload} tune "
                        f"can optimise; choose one of {', '.join(choices)}")
    return objective, choices[objective], metrics.metric(objective).better != metrics.LOWER


# --- memory ------------------------------------------------------------------------------------
def default_memory_limit(config: RunConfig, caps: dict) -> tuple[float | None, str]:
    """The device's free memory minus the margin (CPU: available RAM); (None, why) when unknown."""
    import psutil

    from profiler.measure import system

    if caps.get("cuda"):
        index = int(config.device[5:]) if config.device.startswith("cuda:") else 0
        gpu = next((g for g in system.gpus() if g["index"] == index), None)
        free = (gpu or {}).get("memory_free_bytes")
        where = f"free memory of GPU {index} (NVML)"
    else:
        free = psutil.virtual_memory().available
        where = "available RAM (psutil)"
    if not free:
        return None, f"n/a: the {where} could not be read; no candidate is pruned"
    margin = max(MIN_MARGIN_BYTES, free * MARGIN_FRACTION)
    limit = free - margin
    return limit, (f"{metrics.format_value(limit, 'bytes')}: the {where}, "
                   f"{metrics.format_value(free, 'bytes')}, minus {MARGIN_HOW}")


def predicted_peak(space: Space, candidate: Candidate) -> float | None:
    """Predicted memory per process: the built-in GPT's training from its op-by-op theory
    (profiler.figures.theory), every other model and inference from the memory trace of the
    real model with the candidate's techniques (profiler.engine.memory_trace, fake tensors, no
    memory allocated); None where there is none (a technique the trace cannot run: tried)."""
    from profiler.figures.theory import predict_for_config

    config, _ = checked_config(space, candidate)
    if config is None:
        return None
    if config.workload == "train" and getattr(config.model, "source", "preset") == "preset":
        try:
            return predict_for_config(config).get("total")
        except (ValueError, KeyError):
            return None
    return traced_peak(config)


def traced_peak(config: RunConfig) -> float | None:
    """The peak of the config's memory trace, from `effiscope estimate --json --peak-only` in a
    child process (the tuner also runs inside the app, which never imports torch; the answer is
    cached per config, so a second tune asks again for free); None when the trace cannot run it
    (the candidate is then tried)."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from profiler.figures import memory_fit

    with tempfile.TemporaryDirectory(prefix="effiscope-estimate-") as folder:
        path = Path(folder) / "config.toml"
        config.save(path)
        try:
            done = subprocess.run([sys.executable, "-m", "profiler.cli", "estimate", str(path),
                                   "--json", "--peak-only", "--device", "auto"],
                                  capture_output=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
    try:
        result = json.loads(done.stdout[:4 * 1024 * 1024].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return float(result["peak"]) if done.returncode == 0 and memory_fit.valid(result) else None


# --- trials --------------------------------------------------------------------------------------
def trial_config(space: Space, candidate: Candidate, steps: int, final: bool) -> RunConfig:
    """The candidate's config for a trial of `steps` measured steps (or generations): no
    validation or saving during trials; the config's warmup kept (at least COMPILE_WARMUP_STEPS
    with compile, so its compile and recompile steps are excluded)."""
    config, why = checked_config(space, candidate)
    if config is None:
        raise TuneError(why or "not a valid run")
    if config.workload == "infer":
        config.infer.repeats = steps
        if not final:
            config.infer.eval_tokens = 0  # quality is measured in the final re-measure
    else:
        warmup = config.limits.warmup_steps
        if "compile" in config.techniques:
            warmup = max(warmup, COMPILE_WARMUP_STEPS)
        config.limits.warmup_steps = warmup
        config.limits.steps = warmup + steps
        config.limits.time_s = 0.0
        config.train.eval_interval = 0
        config.train.save_checkpoint = False
    return config


class RunEvaluator:
    """Runs a candidate as a recorded worker run: the search's evaluator."""

    def __init__(self, space: Space, store, tag: str, objective: str, sample_key: str,
                 log: Callable[[str], Any] = print, interrupt: threading.Event | None = None):
        self.space, self.store, self.tag = space, store, tag
        self.objective, self.sample_key = objective, sample_key
        self.log, self.interrupt = log, interrupt
        self.count = 0

    def __call__(self, candidate: Candidate, steps: int, final: bool = False,
                 launcher=None) -> tsearch.Measurement:
        """launcher: where the trial runs (profiler.tune.warm.Launcher: a device's worker,
        kept between runs); None = a fresh local worker."""
        from profiler.store.recorder import RunRecorder
        from profiler.wire.client import StartRefused, run_to_completion
        from profiler.wire.launch import worker_command

        started = time.monotonic()
        try:
            config = trial_config(self.space, candidate, steps, final)
            if launcher is not None:
                config = launcher.configure(config)
        except TuneError as exc:
            return tsearch.Measurement(error=str(exc))
        self.count += 1
        label = self.space.label(candidate)
        config.name = f"tune {'final' if final else 'trial'} #{self.count}: {label}"[:200]
        run = self.store.create_run(config)
        self.store.set_tags(run.run_id, ["tune", self.tag])
        recorder = RunRecorder(self.store, run)
        first_measured: list[float] = []

        def on_message(message: dict) -> list:
            if (message.get("type") == "sample" and message.get("phase") == "measure"
                    and not first_measured):
                first_measured.append(time.monotonic())
            return []

        try:
            status = (run_to_completion(config.to_dict(), recorder, on_message=on_message,
                                        interrupt=self.interrupt, command=worker_command(config))
                      if launcher is None else
                      launcher(config, recorder, on_message, self.interrupt))
        except StartRefused as exc:
            status = recorder.finish(None, explanation=str(exc))
        cost = time.monotonic() - started
        fixed = (first_measured[0] - started) if first_measured else cost
        summary = run.summary() or {}
        figures = summary.get("figures") or {}
        fig = figures.get(self.objective) or {}
        dist = fig.get("distribution") or {}
        peak_key, peak = _peak(figures, str(summary.get("device", "")).startswith("cuda"))
        error = None
        if status != "completed":
            error = ((summary.get("error") or {}).get("message") or summary.get("end")
                     or f"the run ended {status}")
        samples = run_samples(run, (self.sample_key,))[self.sample_key]
        shared = busy.sentence(summary)
        if launcher is not None and not launcher.fresh:
            peak_key, peak = launcher.own_peak(peak_key, peak)
        extra = {"distribution": dist, "peak_key": peak_key, "status": status,
                 "effective_batch": summary.get("effective_batch"),
                 "perplexity": (figures.get("perplexity") or {}).get("value"),
                 "busy": f"trial #{self.count} ({label}): {shared}" if shared else ""}
        self.log(f"{'final' if final else 'trial'} #{self.count} ({steps} steps): {label}: "
                 + (f"failed: {error}" if error else
                    stats.describe(dist, metrics.metric(self.objective).unit)))
        return tsearch.Measurement(
            value=None if error else fig.get("value"), ci_low=dist.get("ci_low"),
            ci_high=dist.get("ci_high"), peak_bytes=peak, cost_s=cost, fixed_cost_s=fixed,
            error=error, run_id=run.run_id, samples=samples, extra=extra)


PEAK_KEYS = {True: ("peak_torch_allocated_bytes", "peak_gpu_memory_used_bytes"),
             False: ("peak_rss_growth_bytes", "peak_rss_bytes")}
"""The memory figure a trial is ranked with, first one present: CUDA, or CPU (a train run's
RSS added by training; an inference run has only the process's peak RSS)."""


def _peak(figures: dict, cuda: bool) -> tuple[str, float | None]:
    keys = PEAK_KEYS[cuda]
    for key in keys:
        value = (figures.get(key) or {}).get("value")
        if value is not None:
            return key, value
    return keys[0], None


# --- the final re-measure ------------------------------------------------------------------------
def final_check(evaluate: Callable[..., tsearch.Measurement], finalists: dict[str, Candidate],
                steps: int, rounds: int, higher_is_better: bool,
                log: Callable[[str], Any] = print) -> dict:
    """Measure each finalist ("best", "runner-up", "baseline") `rounds` times, interleaved, and
    judge them on their pooled per-step samples."""
    from profiler.figures.stats import round_order

    measured: dict[str, list[tsearch.Measurement]] = {role: [] for role in finalists}
    for index in range(rounds):
        for role in round_order(list(finalists), index, "rotate", 0):
            measured[role].append(evaluate(finalists[role], steps, final=True))
    return judge(finalists, measured, steps, rounds, higher_is_better)


def judge(finalists: dict[str, Candidate], measured: dict[str, list[tsearch.Measurement]],
          steps: int, rounds: int, higher_is_better: bool) -> dict:
    """The final re-measure's verdicts from each finalist's measurements (their per-step samples
    pooled), by the one verdict rule; the winner has the best pooled median."""
    better = metrics.HIGHER if higher_is_better else metrics.LOWER
    samples: dict[str, list[float]] = {role: [] for role in finalists}
    peaks: dict[str, list[float]] = {role: [] for role in finalists}
    perplexity: dict[str, list[float]] = {role: [] for role in finalists}
    runs: dict[str, list[str]] = {role: [] for role in finalists}
    errors: dict[str, list[str]] = {role: [] for role in finalists}
    busy: dict[str, list[str]] = {role: [] for role in finalists}
    spent = 0.0
    for role in finalists:
        for m in measured.get(role, []):
            spent += m.cost_s
            if m.run_id and m.run_id not in runs[role]:
                runs[role].append(m.run_id)
            if m.error:
                errors[role].append(m.error)
                continue
            samples[role].extend(m.samples)
            if m.extra.get("busy"):
                busy[role].append(m.extra["busy"])
            if m.peak_bytes is not None:
                peaks[role].append(float(m.peak_bytes))
            if m.extra.get("perplexity") is not None:
                perplexity[role].append(float(m.extra["perplexity"]))
    out: dict[str, Any] = {"rounds": rounds, "steps": steps, "spent_s": spent, "roles": {}}
    for role in finalists:
        out["roles"][role] = {
            "candidate": finalists[role].as_dict(), "runs": runs[role], "errors": errors[role],
            "distribution": stats.distribution(samples[role]), "samples": samples[role],
            "peak_bytes": stats.percentile(peaks[role], 50),
            "perplexity": stats.percentile(perplexity[role], 50), "busy": busy[role],
        }
    measured_roles = [r for r in finalists if samples[r]]
    pick = max if higher_is_better else min
    out["winner"] = pick(measured_roles, key=lambda r: out["roles"][r]["distribution"]["median"]) \
        if measured_roles else None
    winner = out["winner"]
    out["comparisons"] = {}
    for role in measured_roles:
        if role != winner:
            out["comparisons"][role] = significance.compare_samples(
                samples[role], samples[winner], better,
                busy="; ".join(busy[role] + busy[winner]))
    return out


def write_tune_run(store, tune_run, base: RunConfig, space: Space, report: dict, stopped: bool) -> None:
    chosen = report["chosen"]
    if chosen is not None:
        candidate = Candidate(tuple(chosen["candidate"].items()))
        config, _ = checked_config(space, candidate)
        if config is not None:
            config.name = f"tuned: {chosen['label']}"[:200]
            path = tune_run.path / "best.toml"
            config.save(path)
            chosen["config_file"] = str(path)
    files.write_text(tune_run.path / "tune.json", json.dumps(report, indent=2, default=str))
    files.write_text(tune_run.path / "tune.md", report_of.format_report(report) + "\n")
    figures = {}
    final = report.get("final")
    if final and final.get("winner"):
        role = final["roles"][final["winner"]]
        objective = report["objective"]
        figures[objective] = stats.timed_figure(
            role["samples"], report["unit"],
            f"the chosen configuration ({chosen['label'] if chosen else 'n/a'}) in the final "
            f"re-measure: median of its per-step samples over {final['rounds']} interleaved "
            f"round(s) of {final['steps']} steps, warmup excluded")
    status = "stopped" if stopped else "completed" if chosen else "failed"
    summary = {"workload": base.workload, "status": status,
               "figures": figures, "end": report["sentence"][:300], "tune": {
                   "trials": len(report["trials"]), "pruned": len(report["pruned"]),
                   "chosen": chosen}}
    tune_run.write_summary(summary)
    store.set_status(tune_run, summary["status"], end=report["sentence"])


__all__ = ["Settings", "RunEvaluator", "final_check", "judge", "write_tune_run",
           "default_memory_limit", "objective_of", "TuneError"]
