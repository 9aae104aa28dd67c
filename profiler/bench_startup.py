"""`effiscope bench startup`: from pressing Run to the first training sample, split into parts.

Measured from the front end's side, as a user waits: process start and imports (until the
worker's hello), setup (data, model, techniques: until `started`), then the first validation
pass and the first training step. Median and spread over fresh processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from profiler import protocol
from profiler.config import ConfigError, resolve

PARTS = ("process_and_imports_s", "setup_s", "first_validation_s", "first_step_s", "total_s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="nano", help="run preset or TOML (default nano)")
    parser.add_argument("--repeats", type=int, default=5, help="fresh worker processes (default 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def measure_once(config_dict: dict) -> dict:
    from profiler.client import EOF, WorkerProcess

    pressed = time.perf_counter()
    worker = WorkerProcess()
    worker.send(protocol.start(config_dict))  # sent at once, as the app does; waits in the pipe
    marks: dict[str, float] = {}
    try:
        while True:
            item = worker.lines.get(timeout=600)
            now = time.perf_counter() - pressed
            if item is EOF:
                raise RuntimeError("the worker exited before its first step")
            message = protocol.decode(item, "worker")
            kind = message["type"]
            if kind == "error":
                raise RuntimeError(message["message"])
            if kind == "hello":
                marks["hello"] = now
            elif kind == "started":
                marks["started"] = now
            elif kind == "sample" and message["step"] == 0:
                marks["validation"] = now
            elif kind == "sample" and message["step"] >= 1:
                marks["first_step"] = now
                break
        worker.send(protocol.stop())
    finally:
        worker.shutdown()
    validation_end = marks.get("validation", marks["started"])
    return {
        "process_and_imports_s": marks["hello"],
        "setup_s": marks["started"] - marks["hello"],
        "first_validation_s": validation_end - marks["started"],
        "first_step_s": marks["first_step"] - validation_end,
        "total_s": marks["first_step"],
    }


def run(args: argparse.Namespace) -> int:
    try:
        config = resolve(args.preset)
    except ConfigError as exc:
        print(f"effiscope: {exc}", file=sys.stderr)
        return 2
    config.limits.steps = max(config.limits.steps, 2)
    samples = []
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
        samples.append(measure_once(config.to_dict()))
    from profiler.system import cpu_name

    report = {"bench": "startup", "preset": args.preset, "repeats": args.repeats, "cpu": cpu_name(),
              "date": time.strftime("%Y-%m-%d"), "samples": samples,
              "median": {p: statistics.median(s[p] for s in samples) for p in PARTS},
              "min": {p: min(s[p] for s in samples) for p in PARTS},
              "max": {p: max(s[p] for s in samples) for p in PARTS}}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def format_table(report: dict) -> str:
    labels = {"process_and_imports_s": "process start + imports (to hello)",
              "setup_s": "setup: data, model, techniques (to started)",
              "first_validation_s": "first validation pass",
              "first_step_s": "first training step",
              "total_s": "Run -> first training sample"}
    lines = [f"bench startup: preset {report['preset']}, {report['repeats']} fresh workers, "
             f"{report['cpu']}", "", "| part | median | min | max |", "|---|---:|---:|---:|"]
    for part in PARTS:
        lines.append(f"| {labels[part]} | {report['median'][part]:.2f} s | "
                     f"{report['min'][part]:.2f} s | {report['max'][part]:.2f} s |")
    lines.append("")
    lines.append(f"aim: under 5 s; median {report['median']['total_s']:.2f} s")
    return "\n".join(lines)
