"""`effiscope bench techniques`: what each training technique buys on this machine.

Every variant is the chosen preset plus one technique, trained in a fresh worker for the same
number of steps; variants are interleaved repeat by repeat (baseline, A, B, ..., baseline, A, ...)
so that drift of the machine (thermal, other load) hits all of them alike. Reported as the
median over repeats and as ratios against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

from profiler import protocol
from profiler.config import ConfigError, RunConfig, resolve
from profiler.metrics import format_value

# (label, techniques) — each a single change against the baseline.
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
    parser.add_argument("--steps", type=int, default=30, help="steps per measurement (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="warmup steps excluded (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--device", default=None, help="device (default: the config's)")
    parser.add_argument("--only", default="", help="comma-separated substrings: measure only "
                        "variants whose label contains one of them (the baseline always runs)")
    parser.add_argument("--compile", action="store_true",
                        help="include torch.compile (a cold compile takes minutes on small CPUs)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")


def _measure(config: RunConfig) -> dict:
    """Train `config` in a fresh worker; return its summary (or the error that stopped it)."""
    from profiler.client import EOF, WorkerProcess

    worker = WorkerProcess()
    try:
        worker.send(protocol.start(config.to_dict()))
        error = None
        while True:
            item = worker.lines.get(timeout=1800)
            if item is EOF:
                return {"error": error or "the worker exited without a summary"}
            message = protocol.decode(item, "worker")
            if message["type"] == "error":
                error = message["message"]
            if message["type"] == "done":
                if message["status"] != "completed":
                    return {"error": error or message["status"]}
                return message["summary"]
    finally:
        worker.shutdown()


def _value(summary: dict, key: str) -> float | None:
    return ((summary.get("figures") or {}).get(key) or {}).get("value")


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base in (None, 0):
        return None
    return value / base


def run(args: argparse.Namespace) -> int:
    from profiler.capabilities import detect
    from techniques import runtime

    try:
        base = resolve(args.preset)
    except ConfigError as exc:
        print(f"effiscope: {exc}", file=sys.stderr)
        return 2
    base.limits.steps = args.steps
    base.limits.warmup_steps = args.warmup
    base.train.eval_interval = 0
    base.techniques = {}
    if args.device:
        base.device = args.device
    device = base.device if base.device != "auto" else None
    caps = detect(device)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]

    variants = []
    skipped = []
    for label, techniques in VARIANTS:
        if "compile" in techniques and not args.compile:
            skipped.append((label, "left out: pass --compile to include it"))
            continue
        if techniques and wanted and not any(w in label for w in wanted):
            continue
        config = RunConfig.from_dict(base.to_dict())
        config.techniques = techniques
        try:
            runtime.check_all(config, caps)
        except (runtime.Unsupported, ValueError) as exc:
            skipped.append((label, str(exc).split(": ", 1)[-1]))
            continue
        variants.append((label, techniques, config))

    results: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    started = time.time()
    for repeat in range(args.repeats):
        for label, _, config in variants:
            print(f"repeat {repeat + 1}/{args.repeats}: {label}", file=sys.stderr, flush=True)
            results[label].append(_measure(config))

    rows = []
    baseline_label = variants[0][0]
    def median(label: str, key: str) -> float | None:
        values = [_value(s, key) for s in results[label] if "error" not in s]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    base_tps = median(baseline_label, "tokens_per_s")
    base_mem = median(baseline_label, "peak_rss_growth_bytes")
    base_gpu = median(baseline_label, "peak_torch_allocated_bytes")
    for label, techniques, _ in variants:
        errors = [s["error"] for s in results[label] if "error" in s]
        tps_values = [_value(s, "tokens_per_s") for s in results[label] if "error" not in s]
        tps = median(label, "tokens_per_s")
        mem = median(label, "peak_rss_growth_bytes")
        gpu = median(label, "peak_torch_allocated_bytes")
        rows.append({
            "variant": label, "techniques": techniques,
            "tokens_per_s": tps, "tokens_per_s_ratio": _ratio(tps, base_tps),
            "tokens_per_s_spread": [min(tps_values), max(tps_values)] if tps_values and None not in tps_values else None,
            "peak_rss_growth_bytes": mem, "peak_rss_growth_ratio": _ratio(mem, base_mem),
            "peak_torch_allocated_bytes": gpu, "peak_torch_allocated_ratio": _ratio(gpu, base_gpu),
            "errors": errors,
        })
    host = {"machine": platform.machine(), "python": platform.python_version(),
            "device": caps["device"], "cpu": _cpu()}
    report = {"bench": "techniques", "preset": args.preset, "steps": args.steps,
              "warmup_steps": args.warmup, "repeats": args.repeats, "host": host,
              "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
              "duration_s": time.time() - started, "rows": rows,
              "skipped": [{"variant": label, "reason": why} for label, why in skipped]}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def _cpu() -> str:
    from profiler.system import cpu_name

    return cpu_name()


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def format_table(report: dict) -> str:
    lines = [
        f"bench techniques: preset {report['preset']}, {report['steps']} steps "
        f"({report['warmup_steps']} warmup excluded), median of {report['repeats']} interleaved "
        f"repeats, device {report['host']['device']} ({report['host']['cpu']})",
        "",
        "| variant | tokens/s | vs baseline | peak RSS growth | vs baseline | peak CUDA allocated | vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        tps = "n/a" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:,.0f}"
        lines.append(
            f"| {row['variant']} | {tps} | {_fmt_ratio(row['tokens_per_s_ratio'])} | "
            f"{format_value(row['peak_rss_growth_bytes'], 'bytes')} | "
            f"{_fmt_ratio(row['peak_rss_growth_ratio'])} | "
            f"{format_value(row['peak_torch_allocated_bytes'], 'bytes')} | "
            f"{_fmt_ratio(row['peak_torch_allocated_ratio'])} |"
            + (f" error: {row['errors'][0]}" if row["errors"] else ""))
    for item in report["skipped"]:
        lines.append(f"| {item['variant']} | not run: {item['reason']} | | | | | |")
    return "\n".join(lines)


def main() -> int:  # pragma: no cover - convenience for `python -m profiler.bench_techniques`
    parser = argparse.ArgumentParser(prog="effiscope bench techniques")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["add_arguments", "run", "format_table", "VARIANTS"]
