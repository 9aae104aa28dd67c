"""`effiscope bench overhead`: does measuring slow down what is measured?

The same model, data, optimizer and settings are trained (a) by a bare PyTorch loop in a fresh
process and (b) by the EffiScope worker with full streaming and system sampling. Both are timed
the same way from the outside of the loop: wall time of the measured steps (warmup excluded),
i.e. including everything each loop does per step. Variants are interleaved repeat by repeat;
the result is the median tokens/s ratio worker / bare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from profiler import protocol
from profiler.config import ConfigError, RunConfig, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="nano", help="run preset or TOML (default nano)")
    parser.add_argument("--steps", type=int, default=60, help="steps per measurement (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="warmup steps excluded (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def bare_loop(config: RunConfig) -> dict:
    """A plain training loop: no protocol, no sampler, no techniques machinery."""
    import torch

    from profiler.data import BatchSampler, load_corpus
    from profiler.models.gpt import build_gpt
    from profiler.models.presets import GPT_PRESETS

    device = torch.device("cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available()
                          else "cpu")
    torch.manual_seed(config.seed)
    model = build_gpt(config.model.preset).to(device)
    shape = GPT_PRESETS[config.model.preset]
    corpus = load_corpus(config.data.source, config.data.path, config.data.max_train_bytes,
                         config.data.val_fraction, shape.vocab_size, config.seed)
    batches = BatchSampler(corpus.train, config.train.batch_size, config.train.seq_len,
                           config.seed, device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.train.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.train.learning_rate, betas=(config.train.beta1, config.train.beta2), foreach=True)
    warm = config.limits.warmup_steps
    started = None
    for step in range(1, config.limits.steps + 1):
        if step == warm + 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        x, y = batches.next()
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # a bare loop that logs its loss reads it too (and so synchronises)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    tokens = (config.limits.steps - warm) * config.train.batch_size * config.train.seq_len
    return {"tokens_per_s": tokens / elapsed, "wall_s": elapsed}


def worker_loop(config: RunConfig) -> dict:
    """The EffiScope worker, timed from outside: arrival of the last warmup sample to the last."""
    from profiler.client import EOF, WorkerProcess

    worker = WorkerProcess()
    arrivals: dict[int, float] = {}
    try:
        worker.send(protocol.start(config.to_dict()))
        while True:
            item = worker.lines.get(timeout=1800)
            now = time.perf_counter()
            if item is EOF:
                raise RuntimeError("the worker exited early")
            message = protocol.decode(item, "worker")
            if message["type"] == "sample":
                arrivals[message["step"]] = now
            elif message["type"] == "error":
                raise RuntimeError(message["message"])
            elif message["type"] == "done":
                break
    finally:
        worker.shutdown()
    warm, steps = config.limits.warmup_steps, config.limits.steps
    elapsed = arrivals[steps] - arrivals[warm]
    tokens = (steps - warm) * config.train.batch_size * config.train.seq_len
    return {"tokens_per_s": tokens / elapsed, "wall_s": elapsed,
            "inside_tokens_per_s": message["summary"]["figures"]["tokens_per_s"]["value"]}


def _bare_in_subprocess(config: RunConfig) -> dict:
    from profiler.client import worker_env

    result = subprocess.run(
        [sys.executable, "-m", "profiler.bench_overhead", "--bare-config", json.dumps(config.to_dict())],
        capture_output=True, text=True, env=worker_env(), timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"the bare loop failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    try:
        config = resolve(args.preset)
    except ConfigError as exc:
        print(f"effiscope: {exc}", file=sys.stderr)
        return 2
    config.limits.steps = args.steps
    config.limits.warmup_steps = args.warmup
    config.train.eval_interval = 0  # validation is not part of either loop
    config.techniques = {}
    bare: list[dict] = []
    worker: list[dict] = []
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
        # Alternate which goes first so that order effects cancel.
        order = ("bare", "worker") if repeat % 2 == 0 else ("worker", "bare")
        for kind in order:
            if kind == "bare":
                bare.append(_bare_in_subprocess(config))
            else:
                worker.append(worker_loop(config))
    ratios = [w["tokens_per_s"] / b["tokens_per_s"] for w, b in zip(worker, bare, strict=True)]
    from profiler.system import cpu_name

    report = {
        "bench": "overhead", "preset": args.preset, "steps": args.steps, "warmup_steps": args.warmup,
        "repeats": args.repeats, "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"),
        "bare_tokens_per_s": [b["tokens_per_s"] for b in bare],
        "worker_tokens_per_s": [w["tokens_per_s"] for w in worker],
        "ratios": ratios, "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios), "max_ratio": max(ratios),
        "inside_vs_outside": [w["inside_tokens_per_s"] / w["tokens_per_s"] for w in worker],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
    return 0


def format_table(report: dict) -> str:
    lines = [
        f"bench overhead: preset {report['preset']}, {report['steps']} steps "
        f"({report['warmup_steps']} warmup excluded), {report['repeats']} interleaved repeats, "
        f"{report['cpu']}",
        "",
        "| loop | median tokens/s | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name, key in (("bare PyTorch loop", "bare_tokens_per_s"),
                      ("EffiScope worker (streaming + sampling)", "worker_tokens_per_s")):
        values = report[key]
        lines.append(f"| {name} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
                     f"{max(values):,.0f} |")
    lines.append("")
    lines.append(f"worker / bare: median {report['median_ratio']:.3f} "
                 f"(min {report['min_ratio']:.3f}, max {report['max_ratio']:.3f}); aim >= 0.98")
    return "\n".join(lines)


def _main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bare-config", required=True)
    args = parser.parse_args()
    config = RunConfig.from_dict(json.loads(args.bare_config))
    print(json.dumps(bare_loop(config)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
