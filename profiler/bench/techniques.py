"""`effiscope bench techniques`: what each training technique buys on this machine.

Every variant is the chosen preset plus one technique, trained in a fresh worker for the same
number of steps; variants are interleaved repeat by repeat (baseline, A, B, ..., baseline, A, ...)
so that drift of the machine (thermal, other load) hits all of them alike (profiler.bench.loop).
Reported as the median with its interval and as a ratio against the baseline measured in the
same run, "no significant difference" where the ratio's interval contains 1.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

from profiler.bench import loop
from profiler.bench.workers import drive
from profiler.config import RunConfig
from profiler.measure.system import cpu_name

# (label, techniques) — each a single change against the baseline, whose optimizer kernel is
# fixed (implementation = auto times the kernels on a CPU and may pick either).
BASELINE = {"optimizer": {"implementation": "foreach"}}
VARIANTS: list[tuple[str, dict]] = [
    ("baseline (AdamW foreach, fp32, SDPA)", {}),
    ("optimizer: AdamW fused", {"optimizer": {"implementation": "fused"}}),
    ("optimizer: AdamW for-loop", {"optimizer": {"implementation": "for-loop"}}),
    ("optimizer: SGD momentum", {"optimizer": {"algorithm": "sgd"}}),
    ("precision: bf16 autocast", {"precision": {"dtype": "bf16"}}),
    ("precision: fp16 autocast + scaler", {"precision": {"dtype": "fp16"}}),
    ("tf32 matmuls", {"tf32": {}}),
    ("activation checkpointing (every block)", {"activation_checkpointing": {"every": 1}}),
    ("activation checkpointing (every 2nd)", {"activation_checkpointing": {"every": 2}}),
    ("gradient accumulation x2", {"grad_accumulation": {"micro_batches": 2}}),
    ("attention: explicit softmax(QK^T)V", {"attention": {"implementation": "math"}}),
    ("gradient clipping 1.0", {"grad_clip": {"max_norm": 1.0}}),
    ("torch.compile (default)", {"compile": {"mode": "default"}}),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="nano",
                        help="run preset or TOML config to measure (default: nano)")
    parser.add_argument("--steps", type=loop.whole(1, loop.MAX_STEPS), default=30,
                        help="steps per measurement (default 30)")
    parser.add_argument("--warmup", type=loop.whole(0), default=5,
                        help="warmup steps excluded (default 5)")
    parser.add_argument("--repeats", type=loop.whole(1, loop.MAX_REPEATS), default=6,
                        help="interleaved rounds (default 6, "
                        "the fewest with a 95 %% interval of the median)")
    loop.add_order_arguments(parser)
    parser.add_argument("--device", default=None, help="device (default: the config's)")
    parser.add_argument("--only", default="", help="comma-separated substrings: measure only "
                        "variants whose label contains one of them (the baseline always runs)")
    parser.add_argument("--compile", action="store_true",
                        help="include torch.compile (a cold compile takes minutes on small CPUs)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")


METRICS = ("tokens_per_s", "peak_rss_growth_bytes", "peak_torch_allocated_bytes")


def _measure(config: RunConfig) -> dict:
    """Train `config` in a fresh worker; its summary figures (or the error that stopped it)."""
    result = drive(config.to_dict())
    if result["error"]:
        return {"error": result["error"]}
    figures = result["summary"].get("figures") or {}
    return {key: (figures.get(key) or {}).get("value") for key in METRICS}


def run(args: argparse.Namespace) -> int:
    from techniques import runtime

    problem = loop.warmup_problem(args.steps, args.warmup) or loop.only_problem(
        args.only, [label for label, techniques in VARIANTS if techniques], "variant")
    if problem:
        return loop.usage_error(problem)
    base = loop.config_or_none(args.preset, {
        "limits.steps": args.steps, "limits.warmup_steps": args.warmup,
        "train.eval_interval": 0, "device": args.device})
    if base is None:
        return 2
    base.techniques = {}
    from profiler.measure import machine_check

    try:
        caps = machine_check.capabilities(base)
    except runtime.Unsupported as exc:
        return loop.usage_error(str(exc))
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]

    candidates = []
    chosen = []
    skipped = []
    for label, techniques in VARIANTS:
        if "compile" in techniques and not args.compile:
            skipped.append((label, "left out: pass --compile to include it"))
            continue
        if techniques and wanted and not any(w in label for w in wanted):
            continue
        config = RunConfig.from_dict(base.to_dict())
        config.techniques = {name: {**BASELINE.get(name, {}), **techniques.get(name, {})}
                             for name in {**BASELINE, **techniques}}
        try:
            runtime.check_all(config, caps)
        except (runtime.Unsupported, ValueError) as exc:
            skipped.append((label, str(exc).split(": ", 1)[-1]))
            continue
        candidates.append(loop.Candidate(label, lambda c=config: _measure(c)))
        chosen.append((label, techniques))

    started = time.time()
    result = loop.compare(candidates, METRICS, repeats=args.repeats, order=args.order,
                          seed=args.seed)
    rows = []
    for label, techniques in chosen:
        item = result["candidates"][label]
        rows.append({"variant": label, "techniques": techniques, "errors": item["errors"],
                     **{key: {"distribution": item["metrics"][key]["distribution"],
                              "vs_baseline": item["metrics"][key]["vs_baseline"]}
                        for key in METRICS}})
    host = {"machine": platform.machine(), "python": platform.python_version(),
            "device": caps["device"], "cpu": cpu_name()}
    report = {"bench": "techniques", "preset": args.preset, "steps": args.steps,
              "warmup_steps": args.warmup, "host": host,
              "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
              "duration_s": time.time() - started, "comparison": result, "rows": rows,
              "skipped": [{"variant": label, "reason": why} for label, why in skipped]}
    return loop.print_report(report, args.json, format_table)


def format_table(report: dict) -> str:
    lines = [
        f"bench techniques: preset {report['preset']}, {report['steps']} steps per measurement "
        f"({report['warmup_steps']} warmup steps excluded), device {report['host']['device']} "
        f"({report['host']['cpu']})",
        loop.header(report["comparison"]),
        "",
        *loop.markdown_table(report["comparison"], [
            ("tokens_per_s", "tokens/s", "tokens/s", 1.0),
            ("peak_rss_growth_bytes", "peak RSS growth", "MiB", 1 / 2**20),
            ("peak_torch_allocated_bytes", "peak CUDA allocated", "MiB", 1 / 2**20)],
            first="variant"),
    ]
    for item in report["skipped"]:
        lines.append(f"| {item['variant']} | not run: {item['reason']} | | | | | |")
    return "\n".join(lines)


def main() -> int:  # pragma: no cover - convenience for `python -m profiler.bench.techniques`
    parser = argparse.ArgumentParser(prog="effiscope bench techniques")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["add_arguments", "run", "format_table", "VARIANTS"]
