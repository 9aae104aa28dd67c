"""`effiscope bench parallel`: tokens/s of 1 process against N processes (DDP through torchrun)
on this machine, and the scaling efficiency tokens/s(N) / (N x tokens/s(1)).

Each process keeps the same per-process batch (weak scaling, as data parallelism is used);
1-process and N-process runs are interleaved repeat by repeat; medians and spread reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from profiler import protocol
from profiler.config import ConfigError, RunConfig, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="nano", help="run preset or TOML (default nano)")
    parser.add_argument("--nproc", type=int, default=2, help="processes to compare with 1 (default 2)")
    parser.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp")
    parser.add_argument("--steps", type=int, default=30, help="steps per measurement (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="warmup steps excluded (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def measure(config: RunConfig) -> float:
    """The job's tokens/s (warmup excluded) from its summary."""
    from profiler.client import EOF, WorkerProcess
    from profiler.launch import worker_command

    worker = WorkerProcess(command=worker_command(config))
    try:
        worker.send(protocol.start(config.to_dict()))
        error = "the worker exited without a summary"
        while True:
            item = worker.lines.get(timeout=1800)
            if item is EOF:
                raise RuntimeError(error)
            message = protocol.decode(item, "worker")
            if message["type"] == "error":
                error = message["message"]
            elif message["type"] == "done":
                if message["status"] != "completed":
                    raise RuntimeError(error)
                return message["summary"]["figures"]["tokens_per_s"]["value"]
    finally:
        worker.shutdown()


def run(args: argparse.Namespace) -> int:
    try:
        base = resolve(args.preset)
    except ConfigError as exc:
        print(f"effiscope: {exc}", file=sys.stderr)
        return 2
    base.limits.steps, base.limits.warmup_steps = args.steps, args.warmup
    base.train.eval_interval = 0
    base.techniques = {}
    single = RunConfig.from_dict(base.to_dict())
    parallel = RunConfig.from_dict(base.to_dict())
    parallel.launch.nproc_per_node = args.nproc
    parallel.techniques = {args.strategy: {}}
    results: dict[str, list[float]] = {"1": [], str(args.nproc): []}
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
        pair = [("1", single), (str(args.nproc), parallel)]
        for key, config in (pair if repeat % 2 == 0 else pair[::-1]):
            results[key].append(measure(config))
    one, many = results["1"], results[str(args.nproc)]
    efficiencies = [m / (args.nproc * o) for o, m in zip(one, many, strict=True)]
    import os

    from profiler.system import cpu_name

    report = {"bench": "parallel", "preset": args.preset, "strategy": args.strategy,
              "nproc": args.nproc, "steps": args.steps, "warmup_steps": args.warmup,
              "repeats": args.repeats, "cpu": cpu_name(), "cores": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "tokens_per_s": results,
              "speedup_median": statistics.median(m / o for o, m in zip(one, many, strict=True)),
              "efficiency_median": statistics.median(efficiencies),
              "efficiency_range": [min(efficiencies), max(efficiencies)]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def format_table(report: dict) -> str:
    n = report["nproc"]
    lines = [f"bench parallel: preset {report['preset']}, {report['strategy']}, {report['steps']} "
             f"steps ({report['warmup_steps']} warmup excluded), {report['repeats']} interleaved "
             f"repeats, {report['cpu']} ({report['cores']} cores)", "",
             "| processes | median tokens/s | min | max |", "|---:|---:|---:|---:|"]
    for key, values in report["tokens_per_s"].items():
        lines.append(f"| {key} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
                     f"{max(values):,.0f} |")
    low, high = report["efficiency_range"]
    lines += ["", f"speedup {report['speedup_median']:.2f}x with {n} processes; scaling "
              f"efficiency {report['efficiency_median']:.2f} (range {low:.2f}-{high:.2f}); "
              "torchrun gives each rank 1 OpenMP thread, the single process uses all cores"]
    return "\n".join(lines)
