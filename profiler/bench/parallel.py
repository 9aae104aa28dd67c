"""`effiscope bench parallel`: tokens/s of 1 process against N processes (DDP or FSDP through
torchrun) on this machine, and the scaling efficiency tokens/s(N) / (N x tokens/s(1)).

Each process keeps the same per-process batch (weak scaling, as data parallelism is used); the
1-process and N-process jobs are measured by the shared interleaved loop (profiler.bench.loop),
each figure with its interval, the speedup with its bootstrap interval.
"""

from __future__ import annotations

import argparse
import os
import time

from profiler.bench import loop
from profiler.bench.workers import drive
from profiler.config import ConfigError, RunConfig, validate
from profiler.figures.stats import describe, significant_digits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="nano", help="run preset or TOML (default nano)")
    parser.add_argument("--nproc", type=loop.whole(2, 1024), default=2,
                        help="processes to compare with 1 (default 2)")
    parser.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp")
    parser.add_argument("--steps", type=loop.whole(1, loop.MAX_STEPS), default=30,
                        help="steps per measurement (default 30)")
    parser.add_argument("--warmup", type=loop.whole(0), default=5,
                        help="warmup steps excluded (default 5)")
    parser.add_argument("--repeats", type=loop.whole(1, loop.MAX_REPEATS), default=6,
                        help="interleaved rounds (default 6)")
    loop.add_order_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def measure(config: RunConfig) -> dict:
    """The job's tokens/s (warmup excluded) from its summary."""
    from profiler.wire.launch import worker_command

    result = drive(config.to_dict(), command=worker_command(config))
    if result["error"]:
        return {"error": result["error"]}
    return {"tokens_per_s": result["summary"]["figures"]["tokens_per_s"]["value"]}


def run(args: argparse.Namespace) -> int:
    problem = loop.warmup_problem(args.steps, args.warmup)
    if problem:
        return loop.usage_error(problem)
    base = loop.config_or_none(args.preset, {"limits.steps": args.steps,
                                             "limits.warmup_steps": args.warmup,
                                             "train.eval_interval": 0})
    if base is None:
        return 2
    base.techniques = {}
    single = RunConfig.from_dict(base.to_dict())
    parallel = RunConfig.from_dict(base.to_dict())
    parallel.launch.nproc_per_node = args.nproc
    parallel.techniques = {args.strategy: {}}
    try:  # both jobs pass the run's own checks before the first process starts
        validate(single), validate(parallel)
    except ConfigError as exc:
        return loop.usage_error(str(exc))
    many = f"{args.nproc} processes"
    result = loop.compare([loop.Candidate("1 process", lambda: measure(single)),
                           loop.Candidate(many, lambda: measure(parallel))],
                     ["tokens_per_s"], repeats=args.repeats, order=args.order, seed=args.seed)
    speedup = result["candidates"][many]["metrics"]["tokens_per_s"]["vs_baseline"]
    scale = 1 / args.nproc
    efficiency = {key: (value * scale if isinstance(value, float) else value)
                  for key, value in speedup.items()}
    from profiler.measure.system import cpu_name

    report = {"bench": "parallel", "preset": args.preset, "strategy": args.strategy,
              "nproc": args.nproc, "steps": args.steps, "warmup_steps": args.warmup,
              "cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "comparison": result,
              "tokens_per_s": {key: item["metrics"]["tokens_per_s"]["distribution"]
                               for key, item in result["candidates"].items()},
              "speedup": speedup, "efficiency": efficiency}
    return loop.print_report(report, args.json, format_table)


def format_table(report: dict) -> str:
    lines = [f"bench parallel: preset {report['preset']}, {report['strategy']}, {report['steps']} "
             f"steps per measurement ({report['warmup_steps']} warmup steps excluded), "
             f"{report['cpu']} ({report['cores']} cores)", loop.header(report["comparison"]), "",
             "| job | tokens/s |", "|---|---:|"]
    for key, dist in report["tokens_per_s"].items():
        lines.append(f"| {key} | {describe(dist, 'tokens/s')} |")
    s, e = report["speedup"], report["efficiency"]

    def interval(item: dict) -> str:
        if item["ci_low"] is None:
            return "interval n/a"
        return f"{significant_digits(item['ci_low'])}-{significant_digits(item['ci_high'])}"

    lines += ["", f"speedup {significant_digits(s['ratio'])}x ({interval(s)}) with "
              f"{report['nproc']} processes; scaling efficiency {significant_digits(e['ratio'])} "
              f"({interval(e)}); torchrun gives each rank 1 OpenMP thread, the single process "
              "uses all cores"]
    return "\n".join(lines)
