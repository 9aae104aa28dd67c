"""`effiscope bench BENCH`: the benchmarks, each a module of its own with add_arguments(parser)
and run(args) -> int (profiler.bench, and the app's for the GUI benches)."""

from __future__ import annotations

from profiler.cli.common import EXIT_USAGE, err

BENCHES = {
    "techniques": ("profiler.bench.techniques", "tokens/s and peak memory of each training "
                   "technique against the baseline, measured side by side"),
    "compress": ("profiler.bench.compress", "latency and quality of each quantization and "
                 "pruning option against fp32"),
    "overhead": ("profiler.bench.overhead", "the worker against a reference loop doing the "
                 "same work (tokens/s ratio with its interval), and the cost of the system "
                 "sampler and of a profile capture"),
    "parallel": ("profiler.bench.parallel", "tokens/s of 1 against N processes (torchrun) and "
                 "the scaling efficiency"),
    "tune": ("profiler.bench.tune", "the tuner against an exhaustive grid over the same "
             "space: best found (ratio with its interval) and trial time of each"),
    "startup": ("profiler.bench.startup", "from Run to the first training sample, part by part, "
                "with a worker spawned at Run (cold) and one already started (warm)"),
    # The app's module: it imports Qt only inside run(), so building this parser stays Qt-free.
    "gui": ("app.bench_gui", "event-loop stall and redraw rate of the app's charts (200,000 "
            "points each) while a synthetic worker streams 100 samples/s"),
    "compare": ("app.bench_compare", "time of a verdict's statistics per figure pair at 5,000 "
                "samples a run, and the event-loop stall while the Compare tab computes them"),
}


def add_parser(sub) -> None:
    """`bench` and a subcommand per benchmark; one this version lacks says so when run."""
    import importlib

    bench = sub.add_parser("bench", help="benchmarks: ratios measured side by side in one run")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, (module_name, help_text) in BENCHES.items():
        p = bench_sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            p.set_defaults(func=lambda args, n=name: (err(f"bench {n} is not available in this "
                                                           "version"), EXIT_USAGE)[1])
            continue
        module.add_arguments(p)
        p.set_defaults(func=module.run)
