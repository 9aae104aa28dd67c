"""`effiscope bench overhead`: does measuring slow down what is measured?

The same run config is trained (a) by the EffiScope worker, with streaming, per-step figures and
its system sampler, and (b) by a reference loop in a process of its own that does exactly the
worker's work and nothing else: the same set-up (model, corpus, batch samplers, techniques through
the one engine, so the same resolved optimizer implementation), the same threads, the worker's own
`train_step` and `evaluate` on the same validation schedule, the worker's untimed memory probes
on the worker's schedule. Both loss curves must agree step by step (the report says whether they
do). In rounds of their own, the reference loop also runs with the system sampler alone (at its
default period and at 10 Hz) and with a torch.profiler capture, so each cost is reported on its
own.

Both measured processes get the same torch threads (default: every core but one) and are pinned
to the same cores, the bench's own process (which reads the worker's messages, as the app does)
to the core left over: unpinned on a 2-core VM, the scheduler moves the step between cores and a
front end's read lands on the step's core, and one 60-step measurement of the same loop spreads
by several percent, too much to resolve 1 %.

Both loops are timed the same way: from the end of the last warmup step to the end of the last
step (for the worker: arrival of those samples at the front end), validation passes included in
both. Each process stays up for every round (with --concurrent and --restart-every K, a fresh
pair every K rounds: a process's lasting state, such as where its memory landed, then cannot
favour one side for the whole bench); the candidates are interleaved by the shared loop
(profiler.bench.loop) or run at once (profiler.bench.pairs). Each cost is the ratio against the
reference loop measured in the same round (paired: drift slower than a round cancels): the
worker's overhead is the Hodges-Lehmann centre of those ratios with its signed-rank 95 %
interval, the median round with its order-statistics interval beside it, and the lag-1
autocorrelation of the rounds, since both intervals assume independent rounds; the overhead is
stated in percent with its interval and whether that interval resolves 1 %. The unpaired ratio
of medians with its bootstrap interval is reported too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from profiler.bench import loop, pairs
from profiler.bench.overhead_report import format_table, loss_check, overhead_figure
from profiler.bench.reference import ReferenceProcess, timed_figures
from profiler.bench.workers import drive, front_end_on, pin_process, placement, wait_for_hello
from profiler.config import RunConfig

METRICS = ("tokens_per_s", "capture_window_s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="nano", help="run preset or TOML (default nano)")
    parser.add_argument("--steps", type=loop.whole(2, loop.MAX_STEPS), default=60,
                        help="steps per measurement (default 60)")
    parser.add_argument("--warmup", type=loop.whole(1), default=10,
                        help="warmup steps excluded (default 10)")
    parser.add_argument("--repeats", type=loop.whole(1, loop.MAX_REPEATS), default=16,
                        help="interleaved rounds of the worker against the reference (default 16)")
    parser.add_argument("--cost-repeats", type=loop.whole(0, loop.MAX_REPEATS), default=0,
                        help="rounds of the sampler and profile-capture costs (default: --repeats)")
    parser.add_argument("--cost-steps", type=loop.whole(0, loop.MAX_STEPS), default=0,
                        help="steps per measurement of the costs (default: --steps)")
    parser.add_argument("--warmup-rounds", type=loop.whole(0), default=1,
                        help="rounds run first and dropped, in each comparison (default 1)")
    parser.add_argument("--threads", type=loop.whole(0), default=0,
                        help="torch threads of the worker and of the reference (default: every "
                        "core but one, which the bench's front end keeps)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="pin the measured processes to their cores, the front end to the "
                        "rest (default on where a core is left over)")
    parser.add_argument("--concurrent", action="store_true",
                        help="run the worker and the reference at the same time, on cores of "
                        "their own swapped every round (profiler.bench.pairs): both see the same "
                        "moment of the machine, so the pair resolves a smaller overhead; needs 2 "
                        "cores, the front end shares the worker's")
    parser.add_argument("--pad-steps", type=loop.whole(0), default=0,
                        help="with --concurrent: unmeasured steps each side runs after its "
                        "window, so that each window overlaps the other's run (default a tenth "
                        "of --steps, at least 5)")
    parser.add_argument("--swap-s", type=loop.number(0), default=2.0,
                        help="with --concurrent: swap the two sides' cores this often within a "
                        "round too, so that a core slower for a while slows both alike "
                        "(default 2 s; 0: only between rounds)")
    parser.add_argument("--restart-every", type=loop.whole(0), default=0,
                        help="with --concurrent: start a fresh worker and reference process every "
                        "this many kept rounds, each block opened by --warmup-rounds dropped "
                        "rounds, so that a process's lasting state (where its memory landed) "
                        "does not favour one side for the whole bench (default 0: never)")
    parser.add_argument("--profile-steps", type=loop.whole(1), default=10,
                        help="steps of the profile capture measured on its own (default 10)")
    loop.add_order_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def default_sampler_period_s() -> float:
    from profiler.measure.system import SAMPLER_PERIOD_S

    return SAMPLER_PERIOD_S


class Processes:
    """The measured pair, the worker and the reference process, started on `where`'s cores;
    restart() replaces both with fresh ones (pairs.compare's blocks)."""

    def __init__(self, where):
        self.where = where
        self.closed = True
        self.start()

    def start(self) -> None:
        from profiler.wire.client import WorkerProcess

        self.reference = ReferenceProcess(self.where.env())
        self.where.pin(self.reference.proc.pid)
        self.worker = WorkerProcess(env=self.where.env())
        self.where.pin(self.worker.pid)
        self.closed = False
        try:
            self.hello = wait_for_hello(self.worker)
        except BaseException:
            self.close()
            raise

    def restart(self) -> None:
        self.close()
        self.start()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.worker.shutdown()
            self.reference.close()


# --- the worker, timed from the front end ------------------------------------------------------
def worker_run(worker, config: RunConfig, window_steps: int, measured_steps: int = 0,
               on_first: Callable[[], None] | None = None) -> dict:
    """One run in the kept worker: sample arrival times, its loss curves; `on_first` is called
    when its first sample arrives (its step-0 validation, or else its first step)."""
    ends: dict[int, float] = {}
    losses: dict[int, float] = {}
    val_losses: list[list] = []

    def on_message(message: dict, now: float) -> None:
        if message["type"] == "sample":
            if on_first is not None and not ends and not val_losses:
                on_first()
            metrics = message["metrics"]
            if message["step"] >= 1:
                ends[message["step"]] = now
                losses[message["step"]] = metrics["loss_train"]
            if metrics.get("loss_val") is not None:
                val_losses.append([message["step"], metrics["loss_val"]])

    result = drive(config.to_dict(), on_message, worker=worker)
    if result["error"]:
        return {"error": result["error"]}
    return {**timed_figures(config, ends, window_steps, measured_steps),
            "losses": [losses[s] for s in sorted(losses)], "val_losses": val_losses}


# --- the bench ---------------------------------------------------------------------------------


REFERENCE, WORKER = "reference loop", "EffiScope worker"
COSTS = (("sampler_default_vs_reference", 1, "tokens_per_s"),
         ("sampler_10hz_vs_reference", 2, "tokens_per_s"),
         ("profile_capture_window_vs_reference", 3, "capture_window_s"))
"""(report key, candidate index in the costs comparison, metric): each cost as the per-round
ratio against the reference loop measured in the same round (profiler.bench.loop.paired_ratio)."""


def run(args: argparse.Namespace) -> int:
    from profiler.measure.system import cpu_name

    # Each flag's own bound is the parser's (loop.whole): here what flags say of each other.
    problem = loop.warmup_problem(args.steps, args.warmup) or (
        loop.warmup_problem(args.cost_steps, args.warmup, "--cost-steps")
        if args.cost_steps else None)
    if problem:
        return loop.usage_error(problem)
    config = loop.config_or_none(args.preset, {"limits.steps": args.steps,
                                               "limits.warmup_steps": args.warmup})
    if config is None:
        return 2
    if args.restart_every and not args.concurrent:
        print("effiscope: --restart-every works with --concurrent (the sequential rounds keep "
              "one worker and one reference for the whole bench): add --concurrent or drop it",
              file=sys.stderr)
        return 2
    pair = pairs.pair_placement(args.threads or None, args.swap_s) if args.concurrent else None
    if isinstance(pair, str):
        print(f"effiscope: --concurrent: {pair}", file=sys.stderr)
        return 2
    config.limits.steps, config.limits.warmup_steps = args.steps, args.warmup
    config.limits.time_s = 0
    cost_config = RunConfig.from_dict(config.to_dict())
    cost_config.limits.steps = args.cost_steps or args.steps
    default_period = default_sampler_period_s()
    profile_steps = min(args.profile_steps, cost_config.limits.steps - args.warmup)
    cost_repeats = args.cost_repeats or args.repeats
    pad = args.pad_steps or max(5, args.steps // 10)
    pair_config = RunConfig.from_dict(config.to_dict())
    pair_config.limits.steps = args.steps + pad
    where = placement(pair.threads if pair else args.threads or None, pin=args.pin)
    mask = os.sched_getaffinity(0) if pair else None
    with front_end_on(where):
        procs = Processes(where)
        try:
            hello = procs.hello

            def both(index: int) -> tuple[dict, dict]:
                """Round `index` of the pair: the reference set up and held, then the worker
                started, the reference let go at the worker's first sample."""
                assert pair is not None
                worker, reference = procs.worker, procs.reference
                pair.apply(index, worker.pid, reference.proc.pid)
                reference.request(pair_config, window_steps=profile_steps, hold=True,
                                  measured_steps=args.steps)
                failed = reference.ready()
                if failed is not None:
                    return failed, {"error": "not run: the reference failed to set up"}
                went: list[bool] = []

                def go() -> None:
                    went.append(True)
                    reference.go()

                with pair.swapping(index, worker.pid, reference.proc.pid):
                    ran = worker_run(worker, pair_config, profile_steps, args.steps, on_first=go)
                    if not went:  # the worker failed before its first sample: release it
                        reference.go()
                    return reference.result(), ran

            def measure(options: dict | None, run_config: RunConfig) -> dict:
                if options is None:
                    return worker_run(procs.worker, run_config, profile_steps)
                return procs.reference.run(run_config, window_steps=profile_steps, **options)

            def compare(labels: dict, repeats: int, run_config: RunConfig) -> dict:
                return loop.compare([loop.Candidate(name, lambda o=options: measure(o, run_config))
                                     for name, options in labels.items()], METRICS,
                                    repeats=repeats, warmup=args.warmup_rounds,
                                    order=args.order, seed=args.seed)

            # The worker against the reference alone: the pair that must resolve 1 %, so every
            # round is spent on it; the costs of the sampler and a capture in rounds of their own.
            if pair is None:
                main = compare({REFERENCE: {}, WORKER: None}, args.repeats, config)
            else:
                main = pairs.compare([REFERENCE, WORKER], both, METRICS, args.repeats,
                                     args.warmup_rounds, restart_every=args.restart_every,
                                     restart=procs.restart)
                # back to the sequential placement for the costs
                where.pin(procs.reference.proc.pid)
                where.pin(procs.worker.pid)
                pin_process(os.getpid(), where.front_end or mask)
            costs = compare({
                REFERENCE: {},
                f"reference + system sampler ({default_period:g} s, default)":
                    {"sampler_period_s": default_period},
                "reference + system sampler (0.1 s, 10 Hz)": {"sampler_period_s": 0.1},
                f"reference + profile capture ({profile_steps} steps)": {"capture_profile": True},
            }, cost_repeats, cost_config)
        finally:
            procs.close()
            if mask is not None:
                pin_process(os.getpid(), mask)
    threads = {"worker": hello["device"].get("torch_threads"),
               "reference": next((m["torch_threads"] for m in
                                  main["candidates"][REFERENCE]["measurements"]), None)}
    cost_names = list(costs["candidates"])
    paired = {"worker_vs_reference": loop.paired_ratio(main, WORKER, "tokens_per_s")}
    unpaired = {"worker_vs_reference": loop.metric(main, WORKER, "tokens_per_s")["vs_baseline"]}
    for key, index, metric_key in COSTS:
        paired[key] = loop.paired_ratio(costs, cost_names[index], metric_key)
        unpaired[key] = loop.metric(costs, cost_names[index], metric_key)["vs_baseline"]
    report = {
        "bench": "overhead", "preset": args.preset, "steps": args.steps,
        "pairing": ("concurrent" if pair else "sequential"),
        "pad_steps": pad if pair else 0,
        "swap_s": pair.swap_s if pair else 0.0,
        "restart_every": args.restart_every,
        "cost_steps": cost_config.limits.steps,
        "warmup_steps": args.warmup, "profile_steps": profile_steps, "cpu": cpu_name(),
        "date": time.strftime("%Y-%m-%d"), "threads": threads,
        "placement": pair.describe() if pair else where.describe(),
        "cost_placement": where.describe(),
        "comparison": main, "costs": costs,
        "loss_curves": loss_check([main]),
        "cost_loss_curves": loss_check([costs]),
        **unpaired,
        "paired": paired,
        "overhead": overhead_figure(paired["worker_vs_reference"]),
    }
    return loop.print_report(report, args.json, format_table)
