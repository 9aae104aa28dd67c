"""`effiscope bench tune`: the tuner against an exhaustive grid over the same space.

The grid measures every candidate for `--grid-steps` measured steps, a fresh worker each (what a
user without the tuner would do); the tuner (profiler.tune.session, as `effiscope tune` runs it:
segment trials in warm runs, successive halving over jobs, `--workers` devices at once, its final
re-measure) searches the same space, its last rung and final re-measure at `--grid-steps`. They
are interleaved: after each trial row the tuner reports (between its runs, so never inside its
timing) one grid trial runs, the rest of the grid after, so that a drift of the machine hits both
alike. Then the two answers are measured against each other in `--repeats` interleaved rounds
(profiler.bench.loop) for the ratio tuner's answer / grid's best with its interval. The trial
time of each (start-up included: what a user waits for) is reported beside it: the tuner's
search, and its final re-measure apart. Every trial is a run in the store, tagged
`bench-tune:<stamp>` (the tuner's also with its tune run).
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
    parser.add_argument("--workers", default="", metavar="LIST",
                        help="the tuner's workers, as for `effiscope tune --workers` (e.g. cpus:2); "
                             "the grid runs one trial at a time")
    parser.add_argument("--no-segments", dest="segments", action="store_false",
                        help="the tuner without segment trials (a fresh run per candidate)")
    loop.add_order_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from profiler.store import RunStore
    from profiler.tune import session
    from profiler.tune.runner import RunEvaluator, Settings
    from profiler.tune.space import Candidate, SpaceError, build_space, parse_space

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
        dims = parse_space(args.space or DEFAULT_SPACE, base.workload)
        space = build_space(base, caps, dims)
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
        f"{args.grid_steps} steps, tuner from {args.min_steps} steps, eta {args.eta}"
        + (f", tuner workers {args.workers}" if args.workers else ""))
    started = time.time()
    pending = list(candidates)
    grid: dict = {}

    def grid_next(*_) -> None:
        if pending:  # one grid trial after each tuner trial row: drift hits both
            candidate = pending.pop(0)
            grid[candidate] = evaluate(candidate, args.grid_steps)

    settings = Settings(budget_s=1e9, dims=dims, min_steps=args.min_steps, eta=args.eta,
                        max_steps=args.grid_steps, final_rounds=1, workers=args.workers,
                        segments=args.segments)
    try:
        tuned = session.tune(base, settings, caps=caps, store=store, log=log, on_trial=grid_next)
    except ValueError as exc:
        return loop.usage_error(str(exc))
    store.set_tags(tuned["tune_run"], ["tune", f"bench-tune:{stamp}"])
    while pending:
        grid_next()
    measured = {c: m for c, m in grid.items() if m.error is None and m.value is not None}
    grid_best = max(measured, key=lambda c: measured[c].value) if measured else None
    chosen = (tuned.get("chosen") or {}).get("candidate")
    tuner_best = Candidate(tuple(chosen.items())) if chosen else None
    grid_time = sum(m.cost_s for m in grid.values())
    tuner_time = tuned["device_s"]
    final_time = (tuned.get("final") or {}).get("spent_s") or 0.0
    tuner_runs = len({t["run_id"] for t in tuned["trials"] if t["run_id"]})

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
        "tuner": {"trials": len(tuned["trials"]), "runs": tuner_runs, "time_s": tuner_time,
                  "wall_s": tuned["search_spent_s"], "final_s": final_time,
                  "workers": [d["name"] for d in tuned["devices"]],
                  "segments": args.segments, "tune_run": tuned["tune_run"],
                  "best": space.label(tuner_best) if tuner_best else None,
                  "answer": tuned["sentence"], "stop_reason": tuned["stop_reason"]},
        "time_ratio": tuner_time / grid_time if grid_time else None,
        "time_ratio_with_final": (tuner_time + final_time) / grid_time if grid_time else None,
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
        f"grid: every candidate at {report['grid_steps']} measured steps, a fresh worker each; "
        f"tuner: successive halving from {report['min_steps']} steps, eta {report['eta']}, "
        + ("segment trials in warm runs" if tuner.get("segments", True) else "a run per trial")
        + f", workers: {', '.join(tuner.get('workers') or ['this machine'])}; "
        f"{report['warmup_steps']} warmup steps excluded from every trial; interleaved",
        "",
        "| | trials | worker runs | trial time (start-up included) | best found |",
        "|---|---:|---:|---:|---|",
        f"| grid | {grid['trials']} | {grid['trials']} | {grid['time_s']:.0f} s | {grid['best']} |",
        f"| tuner (search) | {tuner['trials']} | {tuner.get('runs', 'n/a')} | "
        f"{tuner['time_s']:.0f} s of worker time, {tuner.get('wall_s', tuner['time_s']):.0f} s "
        f"on the clock | {tuner['best']} |",
        f"| tuner (final re-measure) | | | {tuner.get('final_s', 0):.0f} s | |",
        "",
        "tuner's search trial time / grid's: " + (significant_digits(report["time_ratio"]) + "x"
                                                  if report["time_ratio"] else "n/a")
        + (f"; with its final re-measure {significant_digits(report['time_ratio_with_final'])}x"
           if report.get("time_ratio_with_final") else ""),
        f"the tuner's answer: {tuner.get('answer', 'n/a')}",
        "tuner's answer / grid's best, tokens/s: " + (
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
