"""`effiscope bench compare`: how long a verdict's statistics take, and whether the Compare tab
stays responsive while it computes them.

1. The statistics of one figure pair at n per-step samples a run (default 5,000): the bootstrap
   interval of the ratio of medians (profiler.figures.stats.ratio_interval, 2,000 resamples) and the
   Mann-Whitney test, repeated; median and p90 per pair (aim: under 50 ms at n = 5,000).
2. Two stored runs of n measured steps each are compared in the app's CompareView, as a user
   ticking them does: reading the streams and judging every figure run on its worker thread.
   A probe timer asks to run every 5 ms; how late it runs is the event-loop stall while the
   comparison is computed (aim: p99 under 30 ms, as `bench gui`).

Qt is imported inside run() only: the CLI builds its parser without loading Qt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

PROBE_MS = 5
STALL_AIM_MS = 30.0
PAIR_AIM_MS = 50.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=5000,
                        help="per-step samples a run (default 5000)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed repeats of the statistics of one pair (default 20)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def time_statistics(n: int, repeats: int) -> dict:
    """Milliseconds per figure pair for the bootstrap ratio interval and Mann-Whitney at n."""
    import random

    from profiler.figures.significance import mann_whitney
    from profiler.figures.stats import ratio_interval

    rng = random.Random(0)
    a = [1000 * rng.lognormvariate(0, 0.05) for _ in range(n)]
    b = [1010 * rng.lognormvariate(0, 0.05) for _ in range(n)]
    ratio_interval(a, b)  # the first call imports numpy: not a pair's cost
    bootstrap, ranks = [], []
    for seed in range(repeats):
        started = time.perf_counter()
        ratio_interval(a, b, seed=seed)
        middle = time.perf_counter()
        mann_whitney(a, b)
        bootstrap.append((middle - started) * 1e3)
        ranks.append((time.perf_counter() - middle) * 1e3)
    pair = [x + y for x, y in zip(bootstrap, ranks, strict=True)]
    return {"samples_per_run": n, "repeats": repeats,
            "bootstrap_p50_ms": round(_percentile(bootstrap, 50), 2),
            "mann_whitney_p50_ms": round(_percentile(ranks, 50), 2),
            "pair_p50_ms": round(_percentile(pair, 50), 2),
            "pair_p90_ms": round(_percentile(pair, 90), 2), "pair_aim_ms": PAIR_AIM_MS}


def _stored_run(store, name: str, tokens: float, n: int, seed: int) -> str:
    import random

    from profiler.config import RunConfig
    from profiler.figures.stats import timed_figure
    from profiler.store.recorder import RunRecorder

    rng = random.Random(seed)
    config = RunConfig(name=name, device="cpu")
    run = store.create_run(config)
    recorder = RunRecorder(store, run)
    recorder.handle_message({"type": "hello", "protocol": 1, "versions": {}, "device": {},
                             "environment": {}})
    recorder.handle_message({"type": "started", "run": {"workload": "train", "device": "cpu"}})
    rates = []
    for step in range(1, n + 1):
        rate = tokens * rng.lognormvariate(0, 0.05)
        rates.append(rate)
        recorder.handle_message({"type": "sample", "step": step, "time": step * 0.01,
                                 "phase": "measure", "metrics": {
                                     "tokens_per_s": rate, "step_time_s": 256 / rate,
                                     "loss_train": 3.0, "other_cpu_cores": 0.0}})
    recorder.handle_message({"type": "done", "status": "completed", "summary": {
        "workload": "train", "steps_completed": n, "figures": {
            "tokens_per_s": timed_figure(rates, "tokens/s", "per-step median"),
            "step_time_p50_s": timed_figure([256 / r for r in rates], "s", "median")}}})
    recorder.finish(0)
    return run.run_id


def measure_view(n: int) -> dict:
    """The event-loop stall while the Compare tab computes a comparison of two n-step runs."""
    with tempfile.TemporaryDirectory(prefix="effiscope-bench-compare-") as home:
        return _measure_view(n, home)


def _measure_view(n: int, home: str) -> dict:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtWidgets import QApplication

    from app.bench_gui import quiet_size_hint_warning
    from app.compare_view import CompareView
    from profiler.store import RunStore

    app = QApplication.instance() or QApplication([])
    previous = quiet_size_hint_warning()
    store = RunStore(home)
    base, other = _stored_run(store, "base", 1000, n, 1), _stored_run(store, "other", 1010, n, 2)
    view = CompareView(store)
    view.resize(900, 600)
    view.show()
    app.processEvents()
    ticks: list[float] = []
    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()
    view.ready.connect(loop.quit)
    QTimer.singleShot(300_000, loop.quit)
    probe.start(PROBE_MS)
    started = time.perf_counter()
    view.set_runs([base, other], {base: "base", other: "other"})
    asked_ms = (time.perf_counter() - started) * 1e3  # how long set_runs held the GUI thread
    loop.exec()
    ready_ms = (time.perf_counter() - started) * 1e3
    probe.stop()
    lateness = [max(0.0, (b - a) * 1e3 - PROBE_MS) for a, b in zip(ticks[:-1], ticks[1:],
                                                                    strict=True)]
    drawn = view.table.rowCount()
    view.wait()
    view.close()
    from PySide6.QtCore import qInstallMessageHandler

    qInstallMessageHandler(previous)
    return {"samples_per_run": n, "set_runs_ms": round(asked_ms, 1),
            "ready_ms": round(ready_ms, 1), "rows_drawn": drawn, "probe_ticks": len(ticks),
            "stall_p50_ms": round(_percentile(lateness, 50), 2),
            "stall_p99_ms": round(_percentile(lateness, 99), 2),
            "stall_max_ms": round(max(lateness, default=float("nan")), 2),
            "stall_aim_p99_ms": STALL_AIM_MS,
            "machine": f"{platform.node()}: {platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cores, Qt platform {app.platformName()}"}


def run(args: argparse.Namespace) -> int:
    if args.samples < 5 or args.repeats < 1:
        print("effiscope: bench compare needs --samples 5 or more and --repeats 1 or more",
              file=sys.stderr)
        return 2
    result = {"statistics": time_statistics(args.samples, args.repeats),
              "view": measure_view(args.samples)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s, v = result["statistics"], result["view"]
    print(f"bench compare: {s['samples_per_run']:,} per-step samples a run")
    print(f"  statistics per figure pair  p50 {s['pair_p50_ms']:.1f} ms, p90 "
          f"{s['pair_p90_ms']:.1f} ms (bootstrap {s['bootstrap_p50_ms']:.1f} ms, Mann-Whitney "
          f"{s['mann_whitney_p50_ms']:.1f} ms; aim: under {PAIR_AIM_MS:g} ms: "
          f"{'met' if s['pair_p90_ms'] < PAIR_AIM_MS else 'NOT met'})")
    print(f"  Compare tab  set_runs returned in {v['set_runs_ms']:.1f} ms, table drawn after "
          f"{v['ready_ms']:.0f} ms ({v['rows_drawn']} rows)")
    print(f"  event-loop stall while computing  p50 {v['stall_p50_ms']:.1f} ms   p99 "
          f"{v['stall_p99_ms']:.1f} ms   max {v['stall_max_ms']:.1f} ms   (aim: p99 < "
          f"{STALL_AIM_MS:g} ms: {'met' if v['stall_p99_ms'] < STALL_AIM_MS else 'NOT met'})")
    print(f"  machine  {v['machine']}")
    return 0
