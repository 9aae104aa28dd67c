"""`effiscope bench startup`: from pressing Run to the first training sample, on both paths.

- cold: the worker is spawned when Run is pressed (start is sent at once and waits in the pipe):
  process start and imports (until hello), setup (data, model, techniques: until `started`), the
  first validation pass, the first training step.
- warm: a worker was started in the background and has said hello (torch imported) before Run
  is pressed, as the app keeps one ready: only setup, validation and the first step remain.
Both are measured from the front end's side, interleaved by the shared loop (profiler.bench.loop),
every part with its interval, warm / cold with its bootstrap interval.
"""

from __future__ import annotations

import argparse
import time

from profiler.bench import loop
from profiler.bench.workers import drive, wait_for_hello

PARTS = ("process_and_imports_s", "setup_s", "first_validation_s", "first_step_s", "total_s")
LABELS = {"process_and_imports_s": "process start + imports (to hello)",
          "setup_s": "setup: data, model, techniques (to started)",
          "first_validation_s": "first validation pass",
          "first_step_s": "first training step",
          "total_s": "Run -> first training sample"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="nano", help="run preset or TOML (default nano)")
    parser.add_argument("--repeats", type=loop.whole(1, loop.MAX_REPEATS), default=6,
                        help="interleaved rounds, one cold and one warm worker each (default 6)")
    loop.add_order_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _until_first_step(config_dict: dict, pressed: float, worker=None) -> dict:
    """Marks (seconds after `pressed`) of hello, started, the step-0 validation and step 1."""
    marks: dict[str, float] = {}

    def on_message(message: dict, now: float) -> bool:
        kind = message["type"]
        if kind == "hello":
            marks["hello"] = now - pressed
        elif kind == "started":
            marks["started"] = now - pressed
        elif kind == "sample" and message["step"] == 0:
            marks["validation"] = now - pressed
        elif kind == "sample" and message["step"] >= 1:
            marks["first_step"] = now - pressed
            return True
        return False

    result = drive(config_dict, on_message, worker=worker, timeout_s=600)
    if "first_step" not in marks:
        return {"error": result["error"] or "the worker ended before its first step"}
    validation_end = marks.get("validation", marks["started"])
    return {"setup_s": marks["started"] - marks.get("hello", 0.0),
            "first_validation_s": validation_end - marks["started"],
            "first_step_s": marks["first_step"] - validation_end,
            "total_s": marks["first_step"], "_hello_s": marks.get("hello")}


def measure_cold(config_dict: dict) -> dict:
    """Spawn a worker when Run is pressed and send start at once."""
    result = _until_first_step(config_dict, time.perf_counter())
    if "error" not in result:
        result["process_and_imports_s"] = result.pop("_hello_s")
    return result


def measure_warm(config_dict: dict) -> dict:
    """A worker that is already up (hello received) when Run is pressed."""
    from profiler.wire.client import WorkerProcess

    worker = WorkerProcess()
    try:
        wait_for_hello(worker)
        result = _until_first_step(config_dict, time.perf_counter(), worker=worker)
    finally:
        worker.shutdown()
    if "error" not in result:
        result.pop("_hello_s")
        result["process_and_imports_s"] = None  # done before Run was pressed
    return result


def run(args: argparse.Namespace) -> int:
    config = loop.config_or_none(args.preset)
    if config is None:
        return 2
    config.limits.steps = max(config.limits.steps, 2)
    config_dict = config.to_dict()
    result = loop.compare([loop.Candidate("cold", lambda: measure_cold(config_dict)),
                           loop.Candidate("warm", lambda: measure_warm(config_dict))],
                     PARTS, repeats=args.repeats, order=args.order, seed=args.seed)
    from profiler.measure.system import cpu_name

    report = {"bench": "startup", "preset": args.preset, "cpu": cpu_name(),
              "date": time.strftime("%Y-%m-%d"), "comparison": result,
              "parts": {name: {part: item["metrics"][part]["distribution"] for part in PARTS}
                        for name, item in result["candidates"].items()},
              "warm_vs_cold": result["candidates"]["warm"]["metrics"]["total_s"]["vs_baseline"]}
    return loop.print_report(report, args.json, format_table)


def format_table(report: dict) -> str:
    from profiler.figures.stats import describe, describe_ratio

    comparison = report["comparison"]
    lines = [f"bench startup: preset {report['preset']}, {report['cpu']}; cold = a worker spawned "
             "at Run, warm = a worker already started (hello received) before Run",
             loop.header(comparison), "", "| part | cold | warm | warm / cold |",
             "|---|---:|---:|---|"]
    for part in PARTS:
        cold, warm = (comparison["candidates"][name]["metrics"][part] for name in ("cold", "warm"))
        ratio = describe_ratio(warm["vs_baseline"]) if warm["distribution"]["n"] else "n/a"
        lines.append(f"| {LABELS[part]} | {describe(cold['distribution'], 's')} | "
                     f"{describe(warm['distribution'], 's')} | {ratio} |")
    for name in ("cold", "warm"):
        for error in comparison["candidates"][name]["errors"]:
            lines.append(f"{name}: a measurement failed: {error}")
    return "\n".join(lines)
