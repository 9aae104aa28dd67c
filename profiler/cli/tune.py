"""`effiscope tune CONFIG`: find the fastest configuration that fits (profiler.tune.session); its
parser, its arguments (torch-free: the app reads the size and duration parsers) and its run."""

from __future__ import annotations

import argparse
import json
import re
import sys

# Ctrl-C 130 and SIGTERM 143, as `effiscope run` (cli.common.SignalStop).
from profiler.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, SignalStop
from profiler.tune.devices import WORKERS_HELP


def _err(text: str) -> None:
    print(f"effiscope: {text}", file=sys.stderr)


_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
               "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
               "tib": 2**40}
_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}


def parse_size(text: str) -> float:
    """"20GiB", "512MiB", "16GB", "20G" (binary) -> bytes; ValueError with the fix."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text or "")
    unit = match[2].lower() if match else None
    if not match or unit not in _SIZE_UNITS or float(match[1]) <= 0:
        raise ValueError("--memory-limit: give a size like 20GiB (or 512MiB, 16GB)")
    return float(match[1]) * _SIZE_UNITS[unit]


def parse_duration(text: str) -> float:
    """"15m", "90s", "1h30m", "600" (seconds) -> seconds; ValueError with the fix."""
    text = (text or "").strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|h|m|s)", text)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(min|h|m|s)", "", text).strip():
            raise ValueError("--budget: give a duration like 15m (or 90s, 1h30m)")
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError("--budget: give a duration like 15m (or 90s, 1h30m)")
    return seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?",
                   help="a preset name (nano, mini, ...) or a TOML config: the baseline, and what "
                        "the search keeps (model, data, global batch); not with --resume")
    p.add_argument("--budget", default="15m",
                   help="trial time the search may spend, start-up included (default 15m; e.g. "
                        "90s, 1h30m); the final re-measure uses what is left, at least one round")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="largest predicted peak to launch (e.g. 20GiB; default: the device's "
                        "free memory minus 10 %%, on CPU the available RAM)")
    p.add_argument("--objective", default="",
                   help="the figure to optimise: tokens_per_s (train, default) or "
                        "step_time_p50_s; decode_tokens_per_s (infer, default), "
                        "prefill_tokens_per_s, ttft_p50_s")
    p.add_argument("--space", action="append", metavar="DIM[=V1,V2]",
                   help="search only these dimensions (repeat the flag): batch, checkpoint, "
                        "precision, optimizer, attention, compile, parallel (train); batch, "
                        "quantize (infer). With '=values' only those values, e.g. "
                        "--space batch=8x2,4x4 --space precision=fp32,bf16")
    p.add_argument("--min-steps", type=int, default=6,
                   help="measured steps of each first-rung trial (default 6, the fewest whose "
                        "median has a 95 %% interval)")
    p.add_argument("--max-steps", type=int, default=54,
                   help="measured steps of the last rung and of the final re-measure (default 54)")
    p.add_argument("--eta", type=int, default=3,
                   help="successive halving keeps 1/eta per rung and gives it eta x the steps "
                        "(default 3)")
    p.add_argument("--final-rounds", type=int, default=3,
                   help="at most this many interleaved rounds of the final re-measure (default 3)")
    p.add_argument("--device", help="override device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--workers", default="", metavar="LIST",
                   help="run trials at once, one per worker: " + WORKERS_HELP.replace("%", "%%"))
    p.add_argument("--no-segments", dest="segments", action="store_false",
                   help="a fresh run per candidate, never segments of one warm run (slower; "
                        "for comparison)")
    p.add_argument("--resume", metavar="RUN_ID",
                   help="go on with an interrupted tune from its stored trials (nothing measured "
                        "is measured again; it keeps the settings it was started with)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from profiler.errors import Unsupported
    from profiler.store import RunStore, StoreError
    from profiler.tune import report as tune_report
    from profiler.tune import session

    store = None
    try:
        if args.resume:
            if args.target:
                raise ValueError("--resume: give the tune run's id alone; it goes on with the "
                                 "config and settings it was started with")
            store = RunStore()
            config, settings = session.resume_settings(store, args.resume)
            caps = _capabilities(config)
        else:
            if not args.target:
                raise ValueError("give a preset or a TOML config to tune (or --resume RUN_ID)")
            config, settings, caps = _new_tune(args)
    except (StoreError, ValueError, Unsupported) as exc:  # UsageError, JournalError: sentences
        _err(str(exc))
        return EXIT_USAGE
    stop = SignalStop(lambda how: "\nstopping after this trial (again to kill it)...")
    stop.install()
    try:
        report = session.tune(config, settings, caps=caps, store=store, interrupt=stop.interrupt,
                              resume=args.resume,
                              log=lambda text: print(text, file=sys.stderr, flush=True))
    except (StoreError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    finally:
        stop.restore()
    print(json.dumps(report, indent=2, default=str) if args.json else tune_report.format_report(report))
    if stop.interrupt.is_set():
        print(f"effiscope: stopped; `effiscope tune --resume {report['tune_run']}` goes on "
              "from here", file=sys.stderr)
        return stop.exit_code
    return EXIT_OK if report.get("chosen") else EXIT_FAILED


class UsageError(ValueError):
    """Bad input on the command line (exit 2)."""


def _new_tune(args: argparse.Namespace):
    """(config, settings, capabilities) of a new tune from the command line; UsageError with
    the fix."""
    from profiler.config import ConfigError, resolve
    from profiler.errors import Unsupported
    from profiler.tune import runner
    from profiler.tune.devices import parse_workers
    from profiler.tune.space import SpaceError, build_space, parse_space
    from profiler.wire.launch import LaunchError, preflight

    try:
        budget = parse_duration(args.budget)
        limit = parse_size(args.memory_limit) if args.memory_limit is not None else None
        for name in ("min_steps", "max_steps", "eta", "final_rounds"):
            if getattr(args, name) < (2 if name == "eta" else 1):
                raise ValueError(f"--{name.replace('_', '-')}: give a whole number of "
                                 f"{2 if name == 'eta' else 1} or more")
        if args.max_steps < args.min_steps:
            raise ValueError("--max-steps: give at least --min-steps")
        if args.workers:
            parse_workers(args.workers)
        try:
            config = resolve(args.target, {"device": args.device})
        except ConfigError as exc:  # the flag that set the refused setting is named
            if args.device and exc.field == "device":
                raise ValueError(f"--device {args.device}: {exc}") from None
            raise
        preflight(config)
        if config.launch.ssh:
            raise ValueError("launch.ssh: tune runs its trials on this machine (its space and "
                             "memory limit are this machine's); leave launch.ssh empty, and "
                             "name other machines with --workers")
        runner.objective_of(config, args.objective)
        dims = parse_space(args.space, config.workload)
        caps = _capabilities(config)
        build_space(config, caps, dims)  # a space that cannot be searched: said before anything runs
    except (ValueError, ConfigError, LaunchError, SpaceError, Unsupported) as exc:
        raise UsageError(str(exc)) from None
    settings = runner.Settings(budget_s=budget, memory_limit=limit, objective=args.objective,
                               dims=dims, min_steps=args.min_steps, eta=args.eta,
                               max_steps=args.max_steps, final_rounds=args.final_rounds,
                               workers=args.workers, segments=args.segments)
    return config, settings, caps


def _capabilities(config) -> dict:
    """What this machine's torch can do (detected by trying, as the worker will); Unsupported
    with a sentence for a device it does not have (`--device cuda` on a CPU-only torch)."""
    from profiler.measure import machine_check

    return machine_check.capabilities(config)


def add_parser(sub) -> None:
    import sys as _sys

    p = sub.add_parser("tune", help="find the fastest configuration that fits in memory "
                       "(trials are runs in the store)", description=_sys.modules[__name__].__doc__)
    add_arguments(p)
    p.set_defaults(func=run)
