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
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from profiler import protocol
from profiler.bench import loop, pairs
from profiler.bench.workers import drive, front_end_on, pin_process, placement, wait_for_hello
from profiler.config import RunConfig
from profiler.protocol import Field, ProtocolError, check
from profiler.stats import describe_ratio

RESULT_PREFIX = "effiscope-reference "
"""The reference process's result lines start with this; anything else on its stdout is a log."""
READY, GO = "effiscope-reference-ready", "go"
"""A held request (run both at once): the reference says READY once set up and its step-0
validation done, and starts its steps when the front end sends GO."""
METRICS = ("tokens_per_s", "capture_window_s")

# What crosses the pipe to and from the reference process, checked on the receiving side (the
# same checker as the worker protocol's): a request, and a result or an error.
_NUM, _NUMBERS = (int, float), Field((list,), each=Field((int, float)))
REQUEST = Field((dict,), fields={
    "config": Field((dict,)), "window_steps": Field((int,)),
    "sampler_period_s": Field((int, float, type(None)), required=False),
    "capture_profile": Field((bool,), required=False),
    "measured_steps": Field((int,), required=False), "hold": Field((bool,), required=False)})
RESULT = Field((dict,), fields={
    "tokens_per_s": Field(_NUM), "capture_window_s": Field(_NUM),
    "clock": Field((dict,), fields={k: Field(_NUM) for k in ("first", "start", "end", "last")}),
    "step_s": _NUMBERS, "losses": _NUMBERS,
    "val_losses": Field((list,), each=Field((list,), each=Field(_NUM))),
    "torch_threads": Field((int,))})
ERROR = Field((dict,), fields={"error": Field((str,))})


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
    from profiler.system import SAMPLER_PERIOD_S

    return SAMPLER_PERIOD_S


# --- the reference loop (runs in its own process) -----------------------------------------------
def reference_run(config: RunConfig, window_steps: int, sampler_period_s: float | None = None,
                  capture_profile: bool = False, measured_steps: int = 0,
                  hold: Callable[[], None] | None = None) -> dict:
    """The worker's training work without the worker's measuring: the same set-up (prepare) and
    the same loop (profiler.workloads.loop.Loop) with null sinks, nothing streamed and nothing
    sampled (unless asked). Timed up to step `measured_steps` (default the last); `hold` is
    called before the first step."""

    import torch

    from profiler.capture import ProfileCapture
    from profiler.workloads import steps
    from profiler.workloads.loop import Loop, StepResult
    from profiler.workloads.setup import prepare, start_sampler

    class Control:
        """The front end of a reference run: no commands, but `hold` before the first step
        and, with capture_profile, a profile request when warmup is over."""

        should_stop = False

        def __init__(self) -> None:
            self.polls = 0

        def poll(self) -> list:
            self.polls += 1
            if self.polls == 1 and hold is not None:
                hold()
            if capture_profile and self.polls == config.limits.warmup_steps + 1:
                return [protocol.profile_request(window_steps)]
            return []

    def quiet(message: dict) -> None:
        return None

    control = Control()
    # The worker's own set-up (profiler/workloads/setup.py), without its sampler thread.
    prep = prepare(config, quiet, control, keep_masks=True, system_sampler=False)
    state, train = prep.state, config.train
    batches = prep.batches(train.batch_size, train.seq_len, sharded=True)
    held_out = prep.batches(train.batch_size, train.seq_len, 1, val=True)
    validation = [held_out.next() for _ in range(train.eval_batches)]
    folder = tempfile.TemporaryDirectory(prefix="effiscope-overhead-")
    capture = ProfileCapture(folder.name, prep.model, prep.device, quiet,
                             compiled=state.compiled)
    # The worker's untimed memory probes, on the worker's schedule: a probe's forward/backward
    # leaves the allocator and caches as the worker's does before the timed steps.
    probes = steps.MemoryProbes(state, prep.batches(train.batch_size, train.seq_len, 2,
                                                    sharded=True), steps.lm_loss_of(state))
    sampler = (start_sampler(prep.dist, prep.caps.get("gpu_uuid"), sampler_period_s)
               if sampler_period_s else None)  # the worker's, meter included

    def step(number: int) -> StepResult:
        loss, grad_norm, tokens = steps.train_step(state, batches, number)
        return StepResult(loss, {"loss_train": loss, "grad_norm": grad_norm}, tokens)

    loop = Loop(prep, control, quiet, step,
                lambda: {"loss_val": steps.evaluate(state, validation)}, probes, "loss_train",
                capture, sampler=sampler)
    try:
        record = loop.run()
    finally:
        if sampler is not None:
            sampler.stop()
        folder.cleanup()
    return {**timed_figures(config, record.step_ends, window_steps, measured_steps),
            "losses": record.losses("loss_train"),
            "val_losses": [[step, found["loss_val"]] for step, found in record.evaluations],
            "torch_threads": torch.get_num_threads()}


def timed_figures(config: RunConfig, ends: dict[int, float], window_steps: int,
                  measured_steps: int = 0) -> dict:
    """tokens/s from the end of the last warmup step to the end of step `measured_steps`
    (default the last), the seconds of the first `window_steps` measured steps (a profile
    capture's window), the step clock (profiler.bench.pairs.Clock) and the seconds of each
    measured step (whether a slow round was slow throughout or in a burst)."""
    warm, steps = config.limits.warmup_steps, config.limits.steps
    last = min(measured_steps or steps, steps)
    tokens = (last - warm) * config.train.batch_size * config.train.seq_len
    window_end = min(last, warm + max(1, window_steps))
    return {"tokens_per_s": tokens / (ends[last] - ends[warm]),
            "capture_window_s": ends[window_end] - ends[warm],
            "clock": {"first": ends[1], "start": ends[warm], "end": ends[last],
                      "last": ends[steps]},
            "step_s": [ends[i] - ends[i - 1] for i in range(warm + 1, last + 1)]}


def serve() -> int:
    """The reference process: one JSON request per stdin line, one result line per request; a
    malformed request gets an error result, and the process waits for the next."""
    while line := sys.stdin.readline():
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            check(request, REQUEST, "the reference request")
            result = reference_run(RunConfig.from_dict(request["config"]),
                                   request["window_steps"], request.get("sampler_period_s"),
                                   request.get("capture_profile", False),
                                   request.get("measured_steps", 0),
                                   _wait_for_go if request.get("hold") else None)
        except Exception as exc:  # noqa: BLE001 - the front end reports it and goes on
            result = {"error": f"the reference loop failed: {type(exc).__name__}: {exc}"}
        sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


def received(line: str) -> dict:
    """One result line of the reference process, checked before the bench reads a field of it:
    a result as reference_run writes it or {"error": sentence}; anything else is an error."""
    try:
        result = json.loads(line[len(RESULT_PREFIX):])
        check(result, ERROR if isinstance(result, dict) and "error" in result else RESULT,
              "the reference result")
        if "error" not in result and not result["tokens_per_s"] > 0:
            raise ProtocolError(f"the reference result's tokens_per_s is {result['tokens_per_s']}")
    except ValueError as exc:  # a JSON decode error or a ProtocolError
        return {"error": f"the reference process sent a malformed result: {exc}"}
    return result


def _wait_for_go() -> None:
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    while (line := sys.stdin.readline()).strip() != GO:
        if not line:
            raise EOFError("the front end closed the pipe before its go")


class ReferenceProcess:
    """The reference loop's process, started once and kept for every round (as the worker is)."""

    def __init__(self, env: dict[str, str] | None = None):
        from profiler.client import worker_env

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "profiler.bench.overhead", "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=worker_env(env), text=True)

    def run(self, config: RunConfig, **options) -> dict:
        self.request(config, **options)
        return self.result()

    def request(self, config: RunConfig, **options) -> None:
        """Start one run (hold=True: it waits for go() after its set-up, see ready())."""
        self._write(json.dumps({"config": config.to_dict(), **options}))

    def ready(self) -> dict | None:
        """Wait until a held run is set up: None when ready, else its error result."""
        assert self.proc.stdout
        while line := self.proc.stdout.readline():
            if line.strip() == READY:
                return None
            if line.startswith(RESULT_PREFIX):
                return received(line)
        return {"error": "the reference process exited"}

    def go(self) -> None:
        self._write(GO)

    def result(self) -> dict:
        assert self.proc.stdout
        while line := self.proc.stdout.readline():
            if line.startswith(RESULT_PREFIX):
                return received(line)
        return {"error": "the reference process exited"}

    def _write(self, line: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Processes:
    """The measured pair, the worker and the reference process, started on `where`'s cores;
    restart() replaces both with fresh ones (pairs.compare's blocks)."""

    def __init__(self, where):
        self.where = where
        self.closed = True
        self.start()

    def start(self) -> None:
        from profiler.client import WorkerProcess

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
def loss_check(results: list[dict]) -> dict:
    """Whether every measurement's loss curves, in every comparison, equal the first reference
    run's, step by step."""
    reference = results[0]["candidates"][results[0]["baseline"]]["measurements"]
    if not reference:
        return {"equal": None, "compared": 0, "steps": 0,
                "how": "n/a: no reference run completed"}
    first = reference[0]
    compared, unequal = 0, []
    for result in results:
        for name, item in result["candidates"].items():
            for index, m in enumerate(item["measurements"]):
                compared += 1
                if m["losses"] != first["losses"] or m["val_losses"] != first["val_losses"]:
                    unequal.append(f"{name} #{index + 1}")
    return {"equal": not unequal, "compared": compared, "steps": len(first["losses"]),
            "validations": len(first["val_losses"]), "unequal": unequal,
            "how": "train loss of every step and every validation loss, compared exactly"}


REFERENCE, WORKER = "reference loop", "EffiScope worker"
COSTS = (("sampler_default_vs_reference", 1, "tokens_per_s"),
         ("sampler_10hz_vs_reference", 2, "tokens_per_s"),
         ("profile_capture_window_vs_reference", 3, "capture_window_s"))
"""(report key, candidate index in the costs comparison, metric): each cost as the per-round
ratio against the reference loop measured in the same round (profiler.bench.loop.paired_ratio)."""
RESOLUTION = 0.01
"""The bench must resolve a 1 % overhead: the paired interval of worker / reference narrower."""


def overhead_figure(paired: dict) -> dict:
    """The worker's overhead in percent of the reference loop's tokens/s, with its interval, and
    whether the interval is narrow enough (RESOLUTION) to tell a 1 % cost from none.

    The figure is the centre of the per-round ratios (Hodges-Lehmann on their logs, with the
    signed-rank interval: nearly as efficient as a mean on normal noise, robust to a stray
    round like the median), the median's interval beside it. Both intervals assume rounds
    independent of each other; rounds whose ratios carry over from one to the next (a lag-1
    autocorrelation beyond what chance gives) do not resolve anything, however narrow the
    interval."""
    centre = paired["centre"]
    ratio, low, high = centre["ratio"], centre["ci_low"], centre["ci_high"]
    independent = paired["rounds_independent"]
    common = {"verdict": paired["verdict"], "lag1_autocorrelation":
              paired["lag1_autocorrelation"], "rounds_independent": independent,
              "median_percent": None if paired["ratio"] is None else (1 - paired["ratio"]) * 100,
              "median_ci": None if paired["ci_low"] is None else
              [(1 - paired["ci_high"]) * 100, (1 - paired["ci_low"]) * 100]}
    percent = None if ratio is None else (1 - ratio) * 100
    if low is None or high is None:
        return {"percent": percent, "ci_low": None, "ci_high": None, "width_percent": None,
                "resolves_1_percent": False, **common}
    width = (high - low) * 100
    return {"percent": percent, "ci_low": (1 - high) * 100, "ci_high": (1 - low) * 100,
            "width_percent": width,
            "resolves_1_percent": width < RESOLUTION * 100 and independent is not False,
            **common}


def run(args: argparse.Namespace) -> int:
    from profiler.system import cpu_name

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


def _overhead_text(report: dict) -> str:
    over = report["overhead"]
    if over["percent"] is None:
        return "n/a"
    if over["ci_low"] is None:
        return f"{over['percent']:+.2f} % (no interval: {over['verdict']})"
    r1 = over["lag1_autocorrelation"]
    if over["resolves_1_percent"]:
        resolved = "resolves 1 %"
    elif over["rounds_independent"] is False:
        resolved = ("does NOT resolve 1 %: the rounds are not independent (a drift carries from "
                    "one to the next), so no interval of them can; raise --restart-every's "
                    "frequency or run on an idle machine")
    else:
        resolved = ("does NOT resolve 1 %: raise --repeats, or run on an idle machine")
    median = over["median_ci"]
    beside = ("" if median is None else
              f"; the median round {over['median_percent']:+.2f} % ({median[0]:+.2f} to "
              f"{median[1]:+.2f} %)")
    lag = "" if r1 is None else f"; lag-1 autocorrelation of the rounds {r1:+.2f}"
    return (f"{over['percent']:+.2f} % of the reference's tokens/s (centre of the rounds, 95 % "
            f"interval {over['ci_low']:+.2f} to {over['ci_high']:+.2f} %, width "
            f"{over['width_percent']:.2f} %: {resolved}{beside}{lag})")


def _same(curves: dict) -> str:
    return {True: "equal", False: f"NOT equal ({', '.join(curves.get('unequal', []))})",
            None: "n/a"}[curves["equal"]]


def format_table(report: dict) -> str:
    paired = report["paired"]
    curves = report["loss_curves"]
    cost_curves = report["cost_loss_curves"]
    same = _same(curves)
    columns = [("tokens_per_s", "tokens/s", "tokens/s", 1.0),
               ("capture_window_s", f"first {report['profile_steps']} measured steps", "s", 1.0)]
    lines = [
        f"bench overhead: preset {report['preset']}, {report['steps']} steps per measurement "
        f"({report['warmup_steps']} warmup steps excluded, validation as configured), "
        f"{report['cpu']}, torch threads: worker {report['threads']['worker']}, reference "
        f"{report['threads']['reference']}; {report['placement']}"
        + (f" ({report['pad_steps']} unmeasured steps after each window); the costs one after "
           f"the other: {report['cost_placement']}" if report["pairing"] == "concurrent" else ""),
        f"loss curves of all {curves['compared']} measurements: {same} "
        f"({curves['steps']} train steps, {curves.get('validations', 0)} validations); of the "
        f"costs' {cost_curves['compared']}: {_same(cost_curves)} ({cost_curves['steps']} steps)",
        "",
        f"the worker against the reference: {loop.header(report['comparison'])}",
        "",
        *loop.markdown_table(report["comparison"], columns, first="loop"),
        "",
        f"the costs of the sampler and of a profile capture, {report['cost_steps']} steps per "
        f"measurement: {loop.header(report['costs'])}",
        "",
        *loop.markdown_table(report["costs"], columns, first="loop"),
        "",
        f"worker / reference (tokens/s), paired within rounds: "
        f"{describe_ratio(paired['worker_vs_reference'])}; overhead {_overhead_text(report)}; "
        "aim: overhead under 2 %, interval narrower than 1 %",
        f"system sampler at its default, paired: "
        f"{describe_ratio(paired['sampler_default_vs_reference'])}",
        f"system sampler at 10 Hz, paired: {describe_ratio(paired['sampler_10hz_vs_reference'])}",
        f"profile capture, time of its {report['profile_steps']} steps and writing the trace "
        "(× the same steps uncaptured), paired: "
        f"{describe_ratio(paired['profile_capture_window_vs_reference'])}",
        "unpaired (ratio of the medians, bootstrap): worker "
        f"{describe_ratio(report['worker_vs_reference'])}; sampler default "
        f"{describe_ratio(report['sampler_default_vs_reference'])}; sampler 10 Hz "
        f"{describe_ratio(report['sampler_10hz_vs_reference'])}; profile capture "
        f"{describe_ratio(report['profile_capture_window_vs_reference'])}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true", required=True,
                        help="be the reference process (JSON requests on stdin)")
    parser.parse_args()
    sys.exit(serve())
