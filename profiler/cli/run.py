"""`effiscope run TARGET`: a preset or a TOML config run headless into the store, with a
progress line; Ctrl-C (or SIGTERM) stops it after the step and keeps it, twice kills the worker.
"""

from __future__ import annotations

import argparse
import json
import sys

from profiler.cli.common import (
    EXIT_CRASHED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    SignalStop,
    err,
)
from profiler.cli.progress import Progress
from profiler.cli.show import print_summary
from profiler.figures.metrics import json_safe  # non-finite figures are n/a (null) in JSON


def add_parser(sub) -> None:
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
    p.add_argument("--memory-snapshot", action="store_true",
                   help="with --profile: also record the CUDA memory snapshot of those steps, "
                        "saved in the run folder for pytorch.org/memory_viz (GPU only: n/a on a "
                        "CPU, said so)")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="mirror the run live into a TensorBoard event file, DIR/RUN_ID/ (as "
                        "`effiscope export --to tensorboard` writes it afterwards)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    from profiler.cli import repeats

    repeats.add_arguments(p)
    p.set_defaults(func=cmd_run)


# `effiscope run` flags that override a setting: (flag, argparse attribute, dotted setting).
RUN_OVERRIDES = (
    ("--steps", "steps", "limits.steps"), ("--device", "device", "device"),
    ("--batch-size", "batch_size", "train.batch_size"), ("--seq-len", "seq_len", "train.seq_len"),
    ("--lr", "lr", "train.learning_rate"), ("--name", "name", "name"),
    ("--nproc", "nproc", "launch.nproc_per_node"), ("--warmup", "warmup", "limits.warmup_steps"),
)


def overrides(args: argparse.Namespace) -> dict:
    return {setting: getattr(args, attr, None) for _, attr, setting in RUN_OVERRIDES}


def with_flag(exc: Exception, args: argparse.Namespace) -> str:
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

    def __init__(self, steps: int, memory: bool = False):
        self.steps = steps
        self.memory = memory
        """--memory-snapshot: the CUDA memory snapshot of the same steps."""
        self.sent = False

    def commands(self, message: dict) -> list[dict]:
        if self.sent or message["type"] != "sample" or message.get("phase") != "measure":
            return []
        from profiler.wire import protocol

        self.sent = True
        return [protocol.profile_request(self.steps, memory=self.memory)]


def cmd_run(args: argparse.Namespace) -> int:
    from profiler.config import ConfigError, resolve
    from profiler.wire.client import StartRefused, start_line
    from profiler.wire.launch import LaunchError, preflight

    try:
        config = resolve(args.target, overrides(args))  # the file and the flags judged together
    except ConfigError as exc:
        err(with_flag(exc, args))
        return EXIT_USAGE
    try:
        preflight(config)
        start_line(config.to_dict())  # a start the protocol cannot carry: refused now, not hung
    except (LaunchError, StartRefused) as exc:
        err(str(exc))
        return EXIT_USAGE
    if args.profile is not None and (args.profile < 1 or config.workload != "train"):
        err("--profile STEPS captures 1 or more training steps after the warmup: use it with "
            "a train run (workload = \"train\") and STEPS of 1 or more")
        return EXIT_USAGE
    if getattr(args, "memory_snapshot", False) and args.profile is None:
        err("--memory-snapshot records the CUDA memory snapshot of the profiled steps: give "
            "--profile STEPS with it")
        return EXIT_USAGE
    if getattr(args, "tensorboard", None):  # a folder that cannot be written: before a run exists
        from profiler import files

        try:
            files.output_folder(args.tensorboard, "choose another folder for --tensorboard")
        except files.FileRefused as exc:
            err(f"--tensorboard: {exc}")
            return EXIT_USAGE
    from profiler.measure import machine_check

    if machine_check.needs_check(config):  # what the worker would refuse: before a run exists
        why = machine_check.refusal(config)
        if why is not None:
            err(f"{why} (nothing was run)")
            return EXIT_USAGE
    if getattr(args, "repeats", None) not in (None, 1):  # the config N times: profiler.cli.repeats
        from profiler.cli.repeats import run_repeats

        return run_repeats(config, args.repeats, lambda cfg, meta: run_once(cfg, args, meta),
                           as_json=args.json)
    return run_once(config, args)[0]


def tensorboard_mirror(args: argparse.Namespace, run):
    """`--tensorboard DIR`: the run's event file written while it goes; the recorder's null
    mirror without it. One that cannot start is said, and the run goes on (it can be exported
    afterwards)."""
    from profiler.store.recorder import NO_MIRROR

    if not getattr(args, "tensorboard", None):
        return NO_MIRROR
    from profiler.report.trackers.tensorboard_events import TensorBoardMirror

    try:
        mirror = TensorBoardMirror(args.tensorboard, run)
    except OSError as exc:
        err(f"--tensorboard: {exc}; the run goes on without the live mirror (`effiscope export "
            f"{run.run_id} --to tensorboard` writes it afterwards)")
        return NO_MIRROR
    print(f"TensorBoard: {mirror.path.parent} (tensorboard --logdir {args.tensorboard})",
          file=sys.stderr)
    return mirror


def run_once(config, args: argparse.Namespace, meta: dict | None = None,
              ) -> tuple[int, str | None]:
    """One headless run of `config` into the store: (exit code, run id or None). `meta` is a
    repeat's place ({group, index, of}, profiler.cli.repeats.mark); with it the summary is not
    printed as JSON (the repeats print one document for the group)."""
    from profiler.store import RunStore, StoreError
    from profiler.store.recorder import RunRecorder
    from profiler.wire.client import StartRefused, run_to_completion
    from profiler.wire.launch import worker_command

    profile = (ProfileRequest(args.profile, getattr(args, "memory_snapshot", False))
               if args.profile else None)
    store = RunStore()
    try:
        run = store.create_run(config)
        if meta:
            from profiler.cli.repeats import mark

            mark(store, run, **meta)
        recorder = RunRecorder(store, run, tensorboard_mirror(args, run))
    except StoreError as exc:
        err(str(exc))
        return EXIT_USAGE, None
    generations = config.infer.warmup_runs + config.infer.repeats
    progress = Progress(generations if config.workload in ("infer", "compress")
                        else config.limits.steps)
    # Ctrl-C and SIGTERM alike: stop after this step and keep the summary; twice: kill.
    stop = SignalStop(lambda how: f"\nstopping after this step ({how} again to kill the "
                                  "worker)...")
    stop.install()
    print(f"run {run.run_id} (stored in {run.path})", file=sys.stderr)
    try:
        start = config.to_dict()
        if not config.launch.ssh:  # the worker may write artifacts (weights) into the run folder
            start["output_dir"] = str(run.path)
        def on_message(message: dict) -> list[dict]:
            progress.update(message)
            return profile.commands(message) if profile else []

        status = run_to_completion(start, recorder, on_message=on_message,
                                   interrupt=stop.interrupt, command=worker_command(config))
    except KeyboardInterrupt:
        status = recorder.finish(None, killed_by_signal=True)
    except StartRefused as exc:
        recorder.note("warning", str(exc))
        status = recorder.finish(None, explanation=str(exc))
    finally:
        stop.restore()
        progress.close()
    summary = run.summary() or {}
    if args.json and meta is None:
        print(json.dumps(json_safe({"run_id": run.run_id, **summary}), indent=2,
                         allow_nan=False))
    elif not args.json:
        print_summary(run.run_id, run.meta(), summary)
    if recorder.mirror.problem:  # the run is whole in the store; the mirror is not
        err(recorder.mirror.problem)
    if recorder.write_error:  # never a silent loss: say what could not be stored, and fail
        err(f"{recorder.write_error}; the run was stopped and {len(recorder.unwritten)} "
            "received messages could not be stored")
        return EXIT_FAILED, run.run_id
    if stop.interrupt.is_set():
        return stop.exit_code, run.run_id
    return ({"completed": EXIT_OK, "stopped": EXIT_OK, "failed": EXIT_FAILED,
             "diverged": EXIT_FAILED}.get(
        status, EXIT_CRASHED), run.run_id)
