"""The `effiscope` command: the app, headless runs, the run history, the worker.

Exit codes: 0 success; 1 the run failed (an error from the worker, a loss that diverged, or the
store could not be written); 2 bad input (config, run id, arguments); 3 the worker crashed or
was killed; 130 interrupted with Ctrl-C, 143 ended by SIGTERM (either way the run is stopped
and kept); 141 the reader of stdout went away (`| head`), ended quietly as Unix tools do.

Text that came from a run (names, messages of a worker that may be on another machine) is
printed with its control characters escaped: a name cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from profiler.metrics import json_safe  # non-finite figures are n/a (null) in JSON
from profiler.text import safe  # the one escaping rule; cli.safe stays importable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CRASHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_PIPE = 128 + 13  # SIGPIPE (a literal: Windows has no signal.SIGPIPE)


def _err(text: str) -> None:
    print(f"effiscope: {safe(text)}", file=sys.stderr)


# --- gui -------------------------------------------------------------------------------------------
def cmd_gui(args: argparse.Namespace) -> int:
    from app.main import main as app_main

    return app_main([])


# --- run -------------------------------------------------------------------------------------------
class Progress:
    """One status line on a terminal (step, tokens/s, loss, ETA); plain lines when piped."""

    def __init__(self, total_steps: int, stream=None):
        self.total = total_steps
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_print = 0.0
        self.last_step = 0
        self.cores: int | None = None  # the worker's machine's, from its hello

    def update(self, message: dict) -> None:
        from profiler.contention import live_text
        from profiler.metrics import format_value

        kind = message["type"]
        if kind == "hello":
            cores = message["environment"].get("cpu_cores_logical")
            self.cores = cores if isinstance(cores, int) else None
        elif kind == "started":
            run = message["run"]
            model = run.get("model") or {}
            verb = {"infer": "generating with", "compress": "compressing",
                    "distill": "distilling into"}.get(run.get("workload"), "training")
            params = model.get("parameters")
            size = f" ({params:,} parameters)" if isinstance(params, int) else ""
            self._line(safe(f"{verb} {model.get('preset', 'a model')}{size} on "
                            f"{run.get('device', '?')}; {run.get('data', '')}"), final=True)
            self.started = time.monotonic()
        elif kind == "sample" and message["step"] > 0:
            self.last_step = message["step"]
            now = time.monotonic()
            if now - self.last_print < (0.1 if self.tty else 5.0) and message["step"] < self.total:
                return
            if self.total <= 0:
                return
            self.last_print = now
            m = message["metrics"]
            elapsed = now - self.started
            rate = message["step"] / elapsed if elapsed > 0 else 0
            eta = (self.total - message["step"]) / rate if rate > 0 else 0
            width = 24
            filled = min(width, int(width * message["step"] / self.total))
            bar = "#" * filled + "-" * (width - filled)
            loss = m.get("loss_train")
            val = m.get("loss_val")
            loss_text = f"loss {loss:.3f}" if loss is not None else "loss n/a"
            rate_tps = next((m[k] for k in ("tokens_per_s", "decode_tokens_per_s",
                                            "compressed_decode_tokens_per_s",
                                            "encode_tokens_per_s", "compressed_encode_tokens_per_s")
                             if m.get(k) is not None), None)
            text = (f"[{bar}] step {message['step']}/{self.total} | "
                    f"{format_value(rate_tps, 'tokens/s')} | {loss_text}")
            if val is not None:
                text += f" | val {val:.3f}"
            text += f" | ETA {int(eta) // 60}:{int(eta) % 60:02d}"
            load, contended = live_text(m.get("other_cpu_cores"), self.cores)
            if contended:  # the speed on this line was measured beside other work
                text += f" | {load}"
            self._line(text)
        elif kind == "event" and message["kind"] in ("warning", "refused", "toggle"):
            self._line(safe(f"{message['kind']}: {message['message']}"), final=True)
        elif kind == "error":
            self._line(safe(f"error ({message['kind']}): {message['message']}") + "\n  hint: "
                       + safe(message["hint"]), final=True)
        elif kind == "profile":
            top = ", ".join(f"{op['name']} ({op['percent_of_steps']:.0f} %)"
                            for op in message["operators"][:3]
                            if op.get("percent_of_steps") is not None)
            last = message["step"] + message["steps"] - 1
            trace = message.get("trace_path") or "not written"
            self._line(safe(f"profile of steps {message['step']}..{last}: trace {trace}; top "
                            f"operators: {top or 'n/a'}"), final=True)

    def _line(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# `effiscope run` flags that override a setting: (flag, argparse attribute, dotted setting).
RUN_OVERRIDES = (
    ("--steps", "steps", "limits.steps"), ("--device", "device", "device"),
    ("--batch-size", "batch_size", "train.batch_size"), ("--seq-len", "seq_len", "train.seq_len"),
    ("--lr", "lr", "train.learning_rate"), ("--name", "name", "name"),
    ("--nproc", "nproc", "launch.nproc_per_node"), ("--warmup", "warmup", "limits.warmup_steps"),
)


def _overrides(args: argparse.Namespace) -> dict:
    return {setting: getattr(args, attr, None) for _, attr, setting in RUN_OVERRIDES}


def _with_flag(exc: Exception, args: argparse.Namespace) -> str:
    """A config sentence that also names the flag: the one given (`--lr 1e10: ...`), or the one
    that would change a setting the preset or file chose (`... (the value of nano; change it
    with --warmup)`)."""
    field = getattr(exc, "field", "")
    for flag, attr, setting in RUN_OVERRIDES:
        if setting != field:
            continue
        value = getattr(args, attr, None)
        if value is not None:
            shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:20]}..."
            return f"{flag} {shown}: {exc}"
        return f"{exc} (the value of {args.target}; change it with {flag})"
    return str(exc)


class ProfileRequest:
    """`--profile STEPS`: one `profile` command, sent once the first measured step is in (warmup
    steps are not what a profile should show)."""

    def __init__(self, steps: int):
        self.steps = steps
        self.sent = False

    def commands(self, message: dict) -> list[dict]:
        if self.sent or message["type"] != "sample" or message.get("phase") != "measure":
            return []
        from profiler import protocol

        self.sent = True
        return [protocol.profile_request(self.steps)]


def cmd_run(args: argparse.Namespace) -> int:
    from profiler.client import StartRefused, start_line
    from profiler.config import ConfigError, resolve
    from profiler.launch import LaunchError, preflight

    try:
        config = resolve(args.target, _overrides(args))  # the file and the flags judged together
    except ConfigError as exc:
        _err(_with_flag(exc, args))
        return EXIT_USAGE
    try:
        preflight(config)
        start_line(config.to_dict())  # a start the protocol cannot carry: refused now, not hung
    except (LaunchError, StartRefused) as exc:
        _err(str(exc))
        return EXIT_USAGE
    if args.profile is not None and (args.profile < 1 or config.workload != "train"):
        _err("--profile STEPS captures 1 or more training steps after the warmup: use it with "
             "a train run (workload = \"train\") and STEPS of 1 or more")
        return EXIT_USAGE
    from profiler import machine_check

    if machine_check.needs_check(config):  # what the worker would refuse: before a run exists
        why = machine_check.refusal(config)
        if why is not None:
            _err(f"{why} (nothing was run)")
            return EXIT_USAGE
    if getattr(args, "repeats", None) not in (None, 1):  # the config N times: profiler.repeats
        from profiler.repeats import run_repeats

        return run_repeats(config, args.repeats, lambda cfg, meta: _run_once(cfg, args, meta),
                           as_json=args.json)
    return _run_once(config, args)[0]


def _run_once(config, args: argparse.Namespace, meta: dict | None = None,
              ) -> tuple[int, str | None]:
    """One headless run of `config` into the store: (exit code, run id or None). `meta` is a
    repeat's place ({group, index, of}, profiler.repeats.mark); with it the summary is not
    printed as JSON (the repeats print one document for the group)."""
    from profiler.client import StartRefused, run_to_completion
    from profiler.launch import worker_command
    from profiler.recorder import RunRecorder
    from profiler.store import RunStore, StoreError

    profile = ProfileRequest(args.profile) if args.profile else None
    store = RunStore()
    try:
        run = store.create_run(config)
        if meta:
            from profiler.repeats import mark

            mark(store, run, **meta)
        recorder = RunRecorder(store, run)
    except StoreError as exc:
        _err(str(exc))
        return EXIT_USAGE, None
    generations = config.infer.warmup_runs + config.infer.repeats
    progress = Progress(generations if config.workload in ("infer", "compress")
                        else config.limits.steps)
    interrupt = threading.Event()
    first_signal: list[int] = []

    def on_signal(signum, frame):
        # Ctrl-C and SIGTERM alike: stop after this step and keep the summary; twice: kill.
        if interrupt.is_set():
            raise KeyboardInterrupt
        first_signal.append(signum)
        interrupt.set()
        how = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        print(f"\nstopping after this step ({how} again to kill the worker)...", file=sys.stderr)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"run {run.run_id} (stored in {run.path})", file=sys.stderr)
    try:
        start = config.to_dict()
        if not config.launch.ssh:  # the worker may write artifacts (weights) into the run folder
            start["output_dir"] = str(run.path)
        def on_message(message: dict) -> list[dict]:
            progress.update(message)
            return profile.commands(message) if profile else []

        status = run_to_completion(start, recorder, on_message=on_message,
                                   interrupt=interrupt, command=worker_command(config))
    except KeyboardInterrupt:
        status = recorder.finish(None, killed_by_signal=True)
    except StartRefused as exc:
        recorder.note("warning", str(exc))
        status = recorder.finish(None, explanation=str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        progress.close()
    summary = run.summary() or {}
    if args.json and meta is None:
        print(json.dumps(json_safe({"run_id": run.run_id, **summary}), indent=2,
                         allow_nan=False))
    elif not args.json:
        _print_summary(run.run_id, run.meta(), summary)
    if recorder.write_error:  # never a silent loss: say what could not be stored, and fail
        _err(f"{recorder.write_error}; the run was stopped and {len(recorder.unwritten)} "
             "received messages could not be stored")
        return EXIT_FAILED, run.run_id
    if interrupt.is_set():
        return (EXIT_TERMINATED if first_signal[:1] == [signal.SIGTERM] else EXIT_INTERRUPTED,
                run.run_id)
    return ({"completed": EXIT_OK, "stopped": EXIT_OK, "failed": EXIT_FAILED,
             "diverged": EXIT_FAILED}.get(
        status, EXIT_CRASHED), run.run_id)


# --- runs / show -----------------------------------------------------------------------------------
def cmd_runs(args: argparse.Namespace) -> int:
    from profiler.metrics import format_value
    from profiler.store import RunStore, StoreError

    store = RunStore()
    try:
        if args.rebuild:
            count = store.rebuild_index()
            print(f"rebuilt {store.index_path} from {count} run folders", file=sys.stderr)
        rows = store.list_runs()
    except StoreError as exc:
        _err(str(exc))
        return EXIT_USAGE
    for warning in store.warnings:  # damaged folders, a locked index: said, never hidden
        print(f"warning: {safe(warning)}", file=sys.stderr)
    if args.json:
        print(json.dumps(json_safe(rows), indent=2, allow_nan=False))
        return EXIT_OK
    if not rows:
        print(f"no runs yet in {safe(store.home)}; start one with `effiscope run nano`")
        return EXIT_OK
    header = f"{'RUN ID':<36} {'NAME':<16} {'STATUS':<10} {'MODEL':<12} {'STEPS':>6} {'TOKENS/S':>12} {'VAL LOSS':>9}"
    print(header)
    for row in rows:
        tps = format_value(row["tokens_per_s"], "tokens/s", with_unit=False)
        val = format_value(row["loss_val_final"], "nats/token", with_unit=False)
        steps = row["steps"] if row["steps"] is not None else "n/a"
        print(f"{safe(row['id']):<36} {safe(str(row['name'])[:16]):<16} {safe(row['status']):<10} "
              f"{safe(row['model']):<12} {steps:>6} {tps:>12} {val:>9}")
    return EXIT_OK


def _print_summary(run_id: str, meta: dict, summary: dict) -> None:
    from profiler import contention
    from profiler.metrics import format_summary_figure
    from profiler.segments import table as segment_table
    from profiler.text import aligned

    def text(value: object) -> str:
        return safe(value if value is not None else "")

    print(f"run      {text(run_id)}")
    print(f"name     {text(meta.get('name', ''))}")
    print(f"status   {text(summary.get('status', meta.get('status', '?')))} "
          f"({text(summary.get('end', meta.get('end', 'no summary')))})")
    if "device" in summary:
        print(f"device   {text(summary['device'])}")
    if "steps_completed" in summary:
        print(f"steps    {text(summary['steps_completed'])} "
              f"({text(summary.get('measured_steps', 0))} measured)")
    err = summary.get("error")
    if isinstance(err, dict):
        print(f"error    {text(err.get('kind'))}: {text(err.get('message'))}\n"
              f"         hint: {text(err.get('hint'))}")
    if summary.get("quality_loss"):
        print(f"quality  {text(summary['quality_loss'])}")
    if contention.load_text(summary):  # beside the speed figures: were they measured alone?
        print(f"load     {text(contention.load_text(summary))}")
    if contention.sentence(summary):
        print(f"warning  {text(contention.sentence(summary))}")
    figures = summary.get("figures")
    for key, fig in (figures.items() if isinstance(figures, dict) else ()):
        if not isinstance(fig, dict):
            continue
        print(f"  {text(key):<28} {text(format_summary_figure(str(key), fig)):>30}   "
              f"{text(fig.get('how', ''))}")
    found = segment_table(summary.get("segments"))
    if found:  # a run whose techniques changed mid-run: the headline is its last segment's
        print("segments (figures of each configuration the run went through)")
        print("\n".join(aligned([found[0], *found[1]], right=set(range(3, len(found[0]))))))


def cmd_show(args: argparse.Namespace) -> int:
    from profiler.store import RunStore, StoreError

    store = RunStore()
    try:
        run = store.open_run(args.run_id)
    except StoreError as exc:
        _err(str(exc))
        return EXIT_USAGE
    summary = run.summary()
    meta = run.meta()
    for problem in run.problems:
        print(f"warning: run folder {safe(run.path)}: {safe(problem)}", file=sys.stderr)
    if summary is None:
        summary = {"status": meta.get("status", "unknown"), "end": "no summary.json (run in progress or interrupted)"}
    if args.json:
        config = None
        if (run.path / "config.toml").exists():
            try:
                config = run.config_dict()
            except StoreError as exc:
                print(f"warning: {safe(exc)}", file=sys.stderr)
        print(json.dumps(json_safe({"run_id": run.run_id, "meta": meta, "config": config,
                                    "summary": summary}), indent=2, default=str,
                         allow_nan=False))
    else:
        _print_summary(run.run_id, meta, summary)
    return EXIT_OK


def cmd_techniques(args: argparse.Namespace) -> int:
    from profiler.capabilities import detect
    from techniques import registry

    try:
        caps = detect(args.device)
    except (RuntimeError, AssertionError) as exc:
        _err(f"cannot inspect device {args.device!r} ({exc}); use cpu or cuda")
        return EXIT_USAGE
    rows = []
    for info in registry.all_techniques():
        why = registry.unavailable_reason(info, info.defaults(), caps)
        rows.append({
            "name": info.name, "label": info.label, "category": info.category, "stage": info.stage,
            "available": why is None, "reason": why or "", "mid_run": list(info.mid_run),
            "always_on": info.always_on, "summary": info.summary, "source": info.source,
            "params": [{"name": p.name, "type": p.type.__name__, "default": p.default,
                        "choices": list(p.choices), "min": p.min, "max": p.max, "help": p.help}
                       for p in info.params],
        })
    if args.json:
        print(json.dumps({"capabilities": caps, "techniques": rows}, indent=2))
        return EXIT_OK
    print(f"device {caps['device']}; applied in this order: {' -> '.join(registry.STAGES)}\n")
    for row in rows:
        mark = "yes" if row["available"] else "no "
        live = "live" if row["mid_run"] else "    "
        print(f"[{mark}] {row['name']:<26} {row['category']:<12} {live}  {row['summary']}")
        if row["reason"]:
            print(f"      why not: {row['reason']}")
        for p in row["params"]:
            extra = f" one of {', '.join(map(str, p['choices']))}" if p["choices"] else ""
            print(f"      {p['name']} = {p['default']!r} ({p['type']}{extra}) {p['help']}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """Built-in presets, models in the local Hugging Face cache, and hf-config architectures."""
    from profiler.models.hf_arch import ARCHITECTURES
    from profiler.models.hf_cache import hub_cache_dir, list_cached_models
    from profiler.models.presets import GPT_PRESETS

    cached = list_cached_models()
    if args.json:
        print(json.dumps({
            "presets": [{"name": n, "description": s.description, **s.as_dict()}
                        for n, s in GPT_PRESETS.items()],
            "hf_cache": str(hub_cache_dir()), "cached": cached,
            "architectures": [{"name": a.name, "kind": a.kind, "summary": a.summary}
                              for a in ARCHITECTURES.values()]}, indent=2))
        return EXIT_OK
    print('Built-in GPT presets (model.source = "preset", model.preset = NAME):')
    for name, shape in GPT_PRESETS.items():
        print(f"  {name:<14} {shape.description}")
    print(f'\nHugging Face cache at {hub_cache_dir()} (model.source = "hf", model.path = ID):')
    for item in cached:
        mark = "yes" if item["usable"] else "no "
        size = f"{item['parameters']:,} parameters" if item["parameters"] else ""
        print(f"  [{mark}] {item['id']:<40} {item['kind'] or '?':<11} {item['model_type']:<10} "
              f"{item['weights']:<12} {size}")
        if item["reason"]:
            print(f"        why not: {item['reason']}")
    if not cached:
        print("  (none found; nothing is downloaded at run time: download models into this "
              "cache, or give a checkpoint folder as model.path)")
    print('\nArchitectures with random weights (model.source = "hf-config", [model.arch] '
          "name = NAME):")
    for arch in ARCHITECTURES.values():
        print(f"  {arch.name:<10} {arch.kind:<11} {arch.summary}")
    return EXIT_OK


# Benchmarks: each lives in its own module with add_arguments(parser) and run(args) -> int.
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


def _add_bench_parsers(sub) -> None:
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
            p.set_defaults(func=lambda args, n=name: (_err(f"bench {n} is not available in this "
                                                            "version"), EXIT_USAGE)[1])
            continue
        module.add_arguments(p)
        p.set_defaults(func=module.run)


def cmd_report(args: argparse.Namespace) -> int:
    from profiler.report import ReportError, export, write

    fmt = args.format or _format_from_suffix(args.out) or "html"
    warnings: list[str] = []
    try:
        if args.out == "-":
            if fmt == "trace":
                _err("--format trace writes a gzip file; give --out PATH")
                return EXIT_USAGE
            if not _stdout_open():
                _err("stdout is closed, so --out - has nowhere to write; give --out PATH")
                return EXIT_USAGE
            write(sys.stdout, args.run_ids, fmt, baseline=args.baseline, warnings=warnings)
            _print_warnings(warnings)
            return EXIT_OK
        path = export(args.run_ids, fmt, args.out or ".", baseline=args.baseline,
                      warnings=warnings)
    except ReportError as exc:
        _err(str(exc))
        return EXIT_USAGE
    _print_warnings(warnings)
    print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _stdout_open() -> bool:
    """Whether stdout can be written (`>&-` leaves sys.stdout None; a closed fd 1 fails fstat)."""
    if sys.stdout is None:
        return False
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests, an embedding)
        return not getattr(sys.stdout, "closed", False)
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _print_warnings(warnings: list[str], shown: int = 20) -> None:
    """What a report could not read (damaged lines, files refused), said beside it."""
    for warning in warnings[:shown]:
        print(f"warning: {safe(warning)}", file=sys.stderr)
    if len(warnings) > shown:
        print(f"warning: and {len(warnings) - shown} more (--format json lists them all)",
              file=sys.stderr)


def _format_from_suffix(out: str | None) -> str | None:
    if not out or out == "-":
        return None
    name = out.lower()
    if name.endswith((".json.gz", ".trace.gz")):
        return "trace"
    suffixes = {".html": "html", ".htm": "html", ".json": "json", ".csv": "csv", ".md": "md"}
    return next((fmt for suffix, fmt in suffixes.items() if name.endswith(suffix)), None)


def cmd_worker(args: argparse.Namespace) -> int:
    from profiler.worker import main as worker_main

    return worker_main([])


# --- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effiscope",
        description="Measure what LLM efficiency techniques buy you, on your model and hardware. "
                    "With no command, opens the desktop app.",
        epilog="Runs are stored in $EFFISCOPE_HOME (default: the platform's user data folder).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("gui", help="open the desktop app")
    p.set_defaults(func=cmd_gui)

    p = sub.add_parser("run", help="run a preset or a TOML config headless, with a progress bar",
                       description="Run a preset (nano, mini, ...) or a TOML config file without "
                                   "the app. Ctrl-C stops the run cleanly and keeps it.")
    p.add_argument("target", help="a preset name (nano, mini, gpt2-small, ...) or a path to a TOML config")
    p.add_argument("--steps", type=int, help="override limits.steps")
    p.add_argument("--device", help="override device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--batch-size", type=int, help="override train.batch_size")
    p.add_argument("--seq-len", type=int, help="override train.seq_len")
    p.add_argument("--lr", type=float, help="override train.learning_rate")
    p.add_argument("--warmup", type=int, help="override limits.warmup_steps")
    p.add_argument("--name", help="a name for the run in the history")
    p.add_argument("--nproc", type=int, help="override launch.nproc_per_node (torchrun processes)")
    p.add_argument("--profile", type=int, metavar="STEPS",
                   help="record STEPS training steps with torch.profiler once the warmup is over "
                        "(at most 50): operator table and trace in the run")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    from profiler import repeats

    repeats.add_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", help="list past runs")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--rebuild", action="store_true", help="rebuild index.sqlite from the run folders first")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="print one run's summary")
    p.add_argument("run_id", help="a run id from `effiscope runs` (a unique prefix is enough)")
    p.add_argument("--json", action="store_true", help="print config, meta and summary as JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("techniques", help="list the techniques and whether this machine can run them")
    p.add_argument("--device", default=None, help="device to check (default: cuda if present, else cpu)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_techniques)

    p = sub.add_parser("models", help="list the built-in presets, the models in the local "
                       "Hugging Face cache and the architectures with random weights")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("report", help="write a report of one run, or compare several",
                       description="Write a profiling report from the run store: one run, or "
                                   "several compared against a baseline (deltas, overlaid charts, "
                                   "config diff).")
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID",
                   help="run ids from `effiscope runs` (a unique prefix is enough)")
    p.add_argument("--format", choices=("html", "json", "csv", "md", "trace"),
                   help="html (default), json, csv, md, or trace (the torch.profiler trace, "
                        "gzipped); guessed from --out's suffix when not given")
    p.add_argument("--out", help="file to write, an existing folder, or - for stdout "
                                 "(default: RUN_ID.FORMAT in the current folder)")
    p.add_argument("--baseline", metavar="RUN_ID",
                   help="the run the others are compared against (default: the first)")
    p.set_defaults(func=cmd_report)

    from profiler import compare_cmd

    p = sub.add_parser("compare", help="runs against a baseline: value, delta, change and "
                                       "whether it is significant or within noise",
                       description=compare_cmd.__doc__.splitlines()[0])
    compare_cmd.add_arguments(p)
    p.set_defaults(func=compare_cmd.run)

    _add_bench_parsers(sub)

    from profiler.tune import cli as tune_cli  # torch-free until it runs

    p = sub.add_parser("tune", help="find the fastest configuration that fits in memory "
                       "(trials are runs in the store)", description=tune_cli.__doc__)
    tune_cli.add_arguments(p)
    p.set_defaults(func=tune_cli.run)

    # The self-check; profiler.doctor imports torch only when it runs.
    from profiler import doctor

    p = sub.add_parser("doctor", help="self-check: every CPU / CUDA path of EffiScope, pass / "
                                      "fail / skip with figures (exit 1 when a check fails)",
                       description=doctor.__doc__.splitlines()[0])
    doctor.add_arguments(p)
    p.set_defaults(func=doctor.run)

    from profiler import roofline_cmd

    p = sub.add_parser("roofline", help="measure this machine's matmul peaks and memory "
                                        "bandwidth (cached), the peaks of MFU on a CPU")
    roofline_cmd.add_arguments(p)
    p.set_defaults(func=roofline_cmd.run)

    p = sub.add_parser("worker", help="speak the worker protocol on stdin/stdout (used by the app, "
                                      "torchrun and ssh)")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    from profiler.files import FileRefused

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return cmd_gui(args)
    try:
        code = args.func(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # a reader that went away is found here, not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except FileRefused as exc:  # a path to write that is a FIFO, a device, a link, a folder
        _err(str(exc))
        return EXIT_USAGE


def _reader_gone() -> int:
    """stdout's reader closed the pipe (`effiscope runs --json | head -1`): end quietly, as
    Unix tools do, with the shell's status for SIGPIPE; nothing more is written to the pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass
    return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
