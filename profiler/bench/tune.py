"""`effiscope bench tune`: the tuner against an exhaustive grid over the same space.

The grid measures every candidate for `--grid-steps` measured steps; the tuner (profiler.tune:
successive halving) searches the same space. Their trials are interleaved one for one (a grid
trial before each tuner trial, the rest of the grid after) so that drift of the machine hits
both alike. Then the two answers are measured against each other in `--repeats` interleaved
rounds (profiler.bench.loop) for the ratio tuner's best / grid's best with its interval. The
trial time of each (start-up included: what a user waits for) is reported beside it.
Every trial is a run in the store, tagged `bench-tune:<stamp>`.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

from profiler.bench import loop
from profiler.measure.system import cpu_name

DEFAULT_SPACE = ["batch", "checkpoint", "attention"]
"""CPU-friendly: bf16 matmuls and a cold torch.compile are slow on small CPUs (add them with
--space on a GPU)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="nano",
                        help="run preset or TOML config to tune (default: nano)")
    parser.add_argument("--space", action="append", metavar="DIM[=V1,V2]",
                        help="dimensions searched, as for `effiscope tune` (default: "
                             + ", ".join(DEFAULT_SPACE) + ")")
    parser.add_argument("--grid-steps", type=loop.whole(1, loop.MAX_STEPS), default=24,
                        help="measured steps of each grid trial and the tuner's last rung "
                             "(default 24)")
    parser.add_argument("--min-steps", type=loop.whole(1, loop.MAX_STEPS), default=6,
                        help="measured steps of the tuner's first rung (default 6, as tune)")
    parser.add_argument("--eta", type=loop.whole(2), default=3, help="successive halving's eta (default 3)")
    parser.add_argument("--warmup", type=loop.whole(0), default=2, help="warmup steps excluded (default 2)")
    parser.add_argument("--repeats", type=loop.whole(1, loop.MAX_REPEATS), default=6,
                        help="interleaved rounds of tuner's best against grid's best (default 6)")
    parser.add_argument("--batch-size", type=loop.whole(1), help="override train.batch_size")
    parser.add_argument("--seq-len", type=loop.whole(2), help="override train.seq_len")
    parser.add_argument("--device", default=None, help="device (default: the config's)")
    loop.add_order_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from profiler.store import RunStore
    from profiler.tune import search as tsearch
    from profiler.tune.runner import RunEvaluator, predicted_peak
    from profiler.tune.space import SpaceError, build_space, parse_space

    if args.grid_steps < args.min_steps:
        return loop.usage_error(f"--grid-steps {args.grid_steps} is below --min-steps "
                                f"{args.min_steps}; give --grid-steps of {args.min_steps} or more")
    base = loop.config_or_none(args.preset, {
        "limits.warmup_steps": args.warmup, "train.eval_interval": 0, "device": args.device,
        "train.batch_size": args.batch_size, "train.seq_len": args.seq_len})
    if base is None:
        return 2
    if base.workload != "train":
        print("effiscope: bench tune measures a train config; give one with workload = train",
              file=sys.stderr)
        return 2
    from profiler.errors import Unsupported
    from profiler.measure import machine_check

    try:
        caps = machine_check.capabilities(base)
    except Unsupported as exc:
        return loop.usage_error(str(exc))
    try:
        space = build_space(base, caps, parse_space(args.space or DEFAULT_SPACE, base.workload))
    except SpaceError as exc:
        print(f"effiscope: {exc}", file=sys.stderr)
        return 2
    store = RunStore()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    evaluate = RunEvaluator(space, store, f"bench-tune:{stamp}", "tokens_per_s", "tokens_per_s",
                            log)
    candidates = space.candidates()
    log(f"bench tune: {len(candidates)} candidates ({', '.join(space.dimensions)}), grid at "
        f"{args.grid_steps} steps, tuner from {args.min_steps} steps, eta {args.eta}")
    started = time.time()
    pending = list(candidates)
    grid: dict = {}

    def grid_next() -> None:
        candidate = pending.pop(0)
        grid[candidate] = evaluate(candidate, args.grid_steps)

    tuner_trials: list = []

    def tuner_evaluate(candidate, steps):
        if pending:
            grid_next()  # one grid trial before each tuner trial: drift hits both
        m = evaluate(candidate, steps)
        tuner_trials.append(m)
        return m

    result = tsearch.search(candidates, tuner_evaluate,
                            predict=lambda c: predicted_peak(space, c), memory_limit=None,
                            budget_s=float("inf"), baseline=space.baseline,
                            min_steps=args.min_steps, eta=args.eta, max_steps=args.grid_steps)
    while pending:
        grid_next()
    measured = {c: m for c, m in grid.items() if m.error is None and m.value is not None}
    grid_best = max(measured, key=lambda c: measured[c].value) if measured else None
    tuner_best = result.best
    grid_time = sum(m.cost_s for m in grid.values())
    tuner_time = sum(m.cost_s for m in tuner_trials)

    def side(candidate):
        return lambda: _measure(evaluate, candidate, args.grid_steps)

    comparison = None
    if grid_best is not None and tuner_best is not None and grid_best != tuner_best:
        comparison = loop.compare([loop.Candidate("grid's best", side(grid_best)),
                                   loop.Candidate("tuner's best", side(tuner_best))],
                                  ["tokens_per_s"], repeats=args.repeats, order=args.order,
                                  seed=args.seed, log=log)
        ratio = loop.paired_ratio(comparison, "tuner's best", "tokens_per_s")
    elif grid_best is not None and grid_best == tuner_best:
        ratio = {"ratio": 1.0, "ci_low": None, "ci_high": None, "n": 0, "significant": False,
                 "verdict": "the same configuration", "how": "both found the same candidate"}
    else:
        ratio = {"ratio": None, "verdict": "n/a: a side measured nothing"}
    ranked_grid = sorted(measured, key=lambda c: measured[c].value, reverse=True)
    report = {
        "bench": "tune", "preset": args.preset, "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "device": caps["device"], "cpu": cpu_name()},
        "space": space.dimensions, "candidates": len(candidates),
        "batch_size": base.train.batch_size, "seq_len": base.train.seq_len,
        "grid_steps": args.grid_steps, "min_steps": args.min_steps, "eta": args.eta,
        "warmup_steps": args.warmup, "tag": f"bench-tune:{stamp}",
        "grid": {"trials": len(grid), "time_s": grid_time,
                 "best": space.label(grid_best) if grid_best else None,
                 "best_rank_of_tuner_pick": (ranked_grid.index(tuner_best) + 1
                                             if tuner_best in ranked_grid else None),
                 "ranking": [{"label": space.label(c), "tokens_per_s": measured[c].value,
                              "distribution": measured[c].extra.get("distribution"),
                              "run_id": measured[c].run_id} for c in ranked_grid],
                 "failed": [{"label": space.label(c), "error": m.error}
                            for c, m in grid.items() if c not in measured]},
        "tuner": {"trials": len(tuner_trials), "time_s": tuner_time,
                  "best": space.label(tuner_best) if tuner_best else None,
                  "stop_reason": result.stop_reason},
        "time_ratio": tuner_time / grid_time if grid_time else None,
        "best_ratio": ratio, "comparison": comparison, "duration_s": time.time() - started,
    }
    return loop.print_report(report, args.json, format_table)


def _measure(evaluate, candidate, steps: int) -> dict:
    m = evaluate(candidate, steps, final=True)
    return {"error": m.error} if m.error else {"tokens_per_s": m.value}


def format_table(report: dict) -> str:
    from profiler.figures.stats import describe, describe_ratio, significant_digits

    grid, tuner = report["grid"], report["tuner"]
    ratio = report["best_ratio"]
    lines = [
        f"bench tune: preset {report['preset']} (batch {report['batch_size']}, seq "
        f"{report['seq_len']}), {report['candidates']} candidates over "
        f"{', '.join(report['space'])}, device {report['host']['device']} ({report['host']['cpu']})",
        f"grid: every candidate at {report['grid_steps']} measured steps; tuner: successive "
        f"halving from {report['min_steps']} steps, eta {report['eta']}; {report['warmup_steps']} "
        "warmup steps excluded from every trial; trials interleaved one for one",
        "",
        "| | trials | trial time (start-up included) | best found |",
        "|---|---:|---:|---|",
        f"| grid | {grid['trials']} | {grid['time_s']:.0f} s | {grid['best']} |",
        f"| tuner | {tuner['trials']} | {tuner['time_s']:.0f} s | {tuner['best']} |",
        "",
        "tuner's trial time / grid's: " + (significant_digits(report["time_ratio"]) + "x"
                                           if report["time_ratio"] else "n/a"),
        "tuner's best / grid's best, tokens/s: " + (
            f"{significant_digits(ratio['ratio'])}x ({ratio['verdict']})"
            if ratio.get("ratio") is not None and ratio.get("ci_low") is None
            else describe_ratio(ratio) + f" (paired over {ratio.get('n')} rounds)"
            if ratio.get("ratio") is not None else ratio["verdict"]),
        f"the tuner's pick is number {grid['best_rank_of_tuner_pick']} of the grid's ranking "
        "(one trial each, so neighbours within noise may swap)",
        "",
        "grid ranking (top 5):",
    ]
    for row in grid["ranking"][:5]:
        lines.append(f"- {row['label']}: {describe(row['distribution'] or {}, 'tokens/s')}")
    for row in grid["failed"]:
        lines.append(f"- {row['label']}: failed: {row['error']}")
    return "\n".join(lines)


__all__ = ["add_arguments", "run", "format_table"]
