"""`effiscope estimate CONFIG`: will it fit? The memory a run needs, traced from its real model
and techniques under fake tensors (profiler.engine.memory_estimate), per part and at the peak,
with the margin band beside it, judged against every GPU of the peak catalogue (or the ones
named), with the largest micro-batch that fits each. Nothing is allocated, nothing downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys

from profiler.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err


def add_parser(sub) -> None:
    p = sub.add_parser("estimate", help="will it fit: the memory a run needs, per part and at "
                                        "its peak, and the GPUs it fits on (no run)",
                       description="Trace a preset or TOML config's model with its techniques "
                                   "under fake tensors (no memory allocated) and say what it "
                                   "needs and where it fits.")
    p.add_argument("target", help="a preset name (nano, gpt2-small, ...) or a TOML config's path")
    p.add_argument("--gpu", action="append", metavar="NAME",
                   help="judge against this GPU only (H100, 'A100 40GB', 4090, ...); repeatable "
                        "(default: every GPU of the catalogue)")
    p.add_argument("--world", type=int, metavar="N",
                   help="processes in the job (default: the config's launch); with FSDP each "
                        "holds its shard")
    p.add_argument("--batch-size", type=int, help="the micro-batch to trace (default: the "
                                                   "config's train or infer batch size)")
    p.add_argument("--device", choices=("cuda", "cpu", "auto"), default="cuda",
                   help="the device the run would use (default: cuda; auto: the config's, cuda "
                        "when this machine has one)")
    p.add_argument("--peak-only", action="store_true",
                   help="trace the micro-batch only (no largest micro-batch: half the time)")
    p.add_argument("--no-cache", action="store_true", help="trace again even when cached")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=cmd_estimate)


def local_gpus() -> list[tuple[str, int]]:
    """This machine's GPUs (NVML), first in the table: "this machine: GPU 0 <name>"."""
    from profiler.measure import system

    return [(f"here: GPU {g['index']} {g['name'] or ''}".strip(), int(g["memory_total_bytes"]))
            for g in system.gpus() if g.get("memory_total_bytes")]


def _check(args: argparse.Namespace) -> str | None:
    for flag, value in (("--world", args.world), ("--batch-size", args.batch_size)):
        if value is not None and not 1 <= value <= 1 << 16:
            return f"{flag} {value}: give a whole number from 1 to 65536"
    return None


def cmd_estimate(args: argparse.Namespace) -> int:
    from profiler.config import ConfigError, resolve
    from profiler.figures import memory_fit

    problem = _check(args)
    if problem:
        err(problem)
        return EXIT_USAGE
    try:
        gpus = memory_fit.catalogue(args.gpu)
    except ValueError as exc:
        err(f"--gpu: {exc}")
        return EXIT_USAGE
    try:
        config = resolve(args.target, on_this_machine=False)  # the trace allocates nothing
    except ConfigError as exc:
        err(str(exc))
        return EXIT_USAGE
    if config.workload not in ("train", "infer"):
        err(f"workload = {config.workload} is not estimated: estimate the train or infer run "
            "of each model")
        return EXIT_USAGE
    from profiler.engine import memory_estimate, memory_trace

    if not args.json:
        print("tracing the model under fake tensors (no memory allocated)...", file=sys.stderr)
    try:
        result = memory_estimate.estimate(
            config, target=None if args.device == "auto" else args.device,
            world_size=args.world, batch_size=args.batch_size, use_cache=not args.no_cache,
            largest=not args.peak_only)
    except memory_trace.Untraceable as exc:
        err(str(exc))
        return EXIT_FAILED
    rows = memory_fit.fit_rows(result, gpus if args.gpu else local_gpus() + gpus)
    band = memory_fit.margin_band(result["peak"], result["target"], result["world_size"])
    if args.json:
        print(json.dumps({**result, "margin": band, "fits": rows}, indent=2))
        return EXIT_OK
    for line in memory_fit.summary_lines(result):
        print(line)
    print(f"traced in {result['seconds']:.1f} s" + (" (read from the cache)"
                                                    if result.get("cached") else ""))
    width = max(22, *(len(row["gpu"]) for row in rows))
    print(f"{'GPU':<{width}} {'memory':>10}  {'verdict':<13} {'largest micro-batch':>19}")
    for row in rows:
        largest = row["largest_micro_batch"]
        said = "n/a" if largest is None else "none (not 1)" if largest == 0 else largest
        print(f"{row['gpu']:<{width}} {memory_fit.gib(row['memory']):>10}  {row['verdict']:<13} "
              f"{said:>19}")
    return EXIT_OK
