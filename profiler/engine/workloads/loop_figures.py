"""The figures every training workload reads from its loop's record alike (loop.LoopRecord): the
headline's steps (every step after warmup, or a toggled run's last segment), speed and step
times over them, the time split, memory, energy, and a torchrun job's ranks."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.engine.workloads.loop import Loop, LoopRecord
from profiler.figures import segments
from profiler.figures.energy import energy_figures
from profiler.figures.stats import figure, percentile, timed_figure
from profiler.measure.system import SAMPLER_PERIOD_S


@dataclass
class Headline:
    """The steps a run's headline figures are taken over: every step after warmup, or for a
    run that changed techniques mid-run the last segment's timed steps (never an average of
    configurations), with their segments and the window in words."""

    records: list[dict]
    segments: list[dict]
    window: str

    @property
    def step_times(self) -> list[float]:
        return [r["step_time_s"] for r in self.records]

    @property
    def step_rates(self) -> list[float]:
        return [r["tokens"] / r["step_time_s"] for r in self.records]

    @property
    def tokens(self) -> int:
        return sum(r["tokens"] for r in self.records)


def headline(record: LoopRecord) -> Headline:
    parts = segments.split(record.records, record.toggles, record.warmup_steps)
    ended_in = segments.headline(parts, record.records)
    if ended_in:
        return Headline(segments.last_timed(parts, record.records), parts, ended_in["window"])
    measured = record.measured()
    window = (f"steps {record.warmup_steps + 1}..{record.steps_done} ({len(measured)} steps), "
              f"{record.warmup_steps} warmup steps excluded" if measured
              else "no steps measured")
    return Headline(measured, parts, window)


def common_figures(loop: Loop, head: Headline, how_extra: str = "",
                   unit_of_work: str = "per-step") -> dict:
    """The figures every training workload reports alike: speed and step times over the
    headline's steps, time split, tokens, memory (RSS, the allocator's run-wide peak, NVML),
    energy, and under torchrun each rank's and the straggler ratio."""
    record, state, sampler = loop.record, loop.state, loop.sampler
    step_times, window = head.step_times, head.window
    synced = ("; each step ends with the device synchronised (torch.cuda.synchronize), so the "
              "host's launches of one step never overlap the GPU's work of the last"
              if state.device.type == "cuda" else "") + how_extra
    peaks = sampler.peaks()
    p50 = percentile(step_times, 50)
    compile_time = None
    if state.compiled and record.first_step_time is not None and p50 is not None:
        compile_time = max(0.0, record.first_step_time - p50)
    figures = {
        "tokens_per_s": timed_figure(head.step_rates, "tokens/s",
                                     f"median of the {unit_of_work} tokens/s over {window}"
                                     f"{synced}"),
        "step_time_p50_s": timed_figure(step_times, "s", f"median step time over {window}"
                                        f"{synced}"),
        "step_time_p90_s": figure(percentile(step_times, 90), "s",
                                  f"90th percentile over {window}"),
        "step_time_p99_s": figure(percentile(step_times, 99), "s",
                                  f"99th percentile over {window}"),
        "peak_rss_bytes": figure(peaks.get("rss_bytes"), "bytes",
                                 f"highest worker RSS seen by the {SAMPLER_PERIOD_S:g} s sampler "
                                 "and at each step"),
        "peak_rss_growth_bytes": figure(
            peaks["rss_bytes"] - record.rss_before_steps
            if peaks.get("rss_bytes") is not None and record.rss_before_steps is not None
            else None, "bytes", "peak RSS minus RSS just before the first step: what training "
            "added (gradients, optimizer state, activations, allocator caches)"),
        "peak_torch_allocated_bytes": figure(
            loop.prep.memory.run_peak(), "bytes", "torch.cuda.max_memory_allocated over the "
            "whole run, warmup included (each segment's own peak is in its row; n/a on CPU)"),
        "peak_gpu_memory_used_bytes": figure(peaks.get("gpu_memory_used_bytes"), "bytes",
                                             "highest NVML device memory seen (n/a without a "
                                             "GPU)"),
        "compile_time_s": figure(compile_time, "s", "first step's time minus the median step "
                                 "(n/a without torch.compile)"),
        "train_time_s": figure(record.wall_s - record.eval_time, "s",
                               "wall time of the step loop, validation excluded"),
        "eval_time_s": figure(record.eval_time, "s", "wall time spent in validation"),
        "tokens_seen": figure(record.tokens_seen, "tokens", "all steps, warmup included"),
    }
    figures.update(energy_figures([record.energy.get(r["step"]) for r in head.records],
                                  step_times, head.tokens, loop.dist.world_size,
                                  loop.energy.method, loop.energy.why_not(), window))
    return figures


def rank_figures(loop: Loop, replica_spread: float | None) -> tuple[dict, dict]:
    """(per-rank figures, job figures) of a torchrun job: each rank's median step time and
    peaks, the straggler ratio and how far the replicas drifted; ({}, {}) for one process."""
    record, dist = loop.record, loop.dist
    rows = record.rank_rows[record.warmup_steps:]
    if not dist.enabled or not rows:
        return {}, {}
    per_rank = {}
    for rank in range(dist.world_size):
        per_rank[str(rank)] = {
            "step_time_p50_s": percentile([row[rank][0] for row in rows], 50),
            "peak_rss_bytes": max((row[rank][3] or 0) for row in record.rank_rows),
            "peak_torch_allocated_bytes": max((row[rank][4] or 0)
                                              for row in record.rank_rows) or None,
        }
    medians = {rank: item["step_time_p50_s"] for rank, item in per_rank.items()}
    slow = max(medians, key=medians.get)
    fast = min(medians.values())
    return per_rank, {
        "straggler_ratio": figure(medians[slow] / fast if fast else None, "x",
                                  f"slowest rank ({slow}) median step time / fastest rank's"),
        "replica_param_spread": figure(replica_spread, "", "largest relative difference of "
                                       "parameter checksums across ranks"),
    }
