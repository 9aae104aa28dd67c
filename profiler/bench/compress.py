"""`effiscope bench compress`: what each quantization and pruning option costs and buys here.

One process, one model: the fp32 original and every compressed copy live side by side; their
generations are interleaved by the shared loop (profiler.bench.loop: fp32, A, B, ..., then rotated),
so drift of the machine hits all alike. Each option is reported against fp32 — weights in memory,
prefill and per-token decode latency, decode tokens/s, each a median with its interval and a ratio
with its bootstrap interval — with its quality delta:
perplexity on held-out text, KL(fp32‖option) of the next-token distributions (mean and p99 over
tokens) and top-1 agreement, scored at the timed batch size (--batch-size).
By default the preset is first trained briefly in-process, so the quality delta means something.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from pathlib import Path

from profiler import files
from profiler.bench import loop
from profiler.errors import Unsupported
from profiler.figures.stats import describe, describe_ratio

TIMED = ("prefill_latency_s", "decode_latency_s", "decode_tokens_per_s")
"""Per generation: prefill seconds, mean seconds per decode step, decode tokens/s."""

# (label, techniques): each option against the same fp32 model.
OPTIONS: list[tuple[str, dict]] = [
    ("int8 dynamic (per-channel)", {"quantize_int8_dynamic": {}}),
    ("int8 dynamic (per-tensor)", {"quantize_int8_dynamic": {"granularity": "per_tensor"}}),
    ("int8 weight-only (torchao)", {"quantize_weight_only": {"bits": 8}}),
    ("int4 weight-only (torchao)", {"quantize_weight_only": {"bits": 4}}),
    ("bf16 weights", {"weight_cast": {"dtype": "bf16"}}),
    ("fp16 weights", {"weight_cast": {"dtype": "fp16"}}),
    ("magnitude prune 30 %", {"prune_magnitude": {"amount": 0.3}}),
    ("magnitude prune 50 % (global)", {"prune_magnitude": {"amount": 0.5, "scope": "global"}}),
    ("structured prune 25 % rows", {"prune_structured": {"amount": 0.25}}),
    ("structured prune 25 % heads", {"prune_structured": {"amount": 0.25, "dim": "heads"}}),
    # The 2:4 kernels take 16-bit weights: compare this row with "bf16 weights".
    ("2:4 semi-structured (bf16)", {"prune_semi_structured": {},
                                    "weight_cast": {"dtype": "bf16"}}),
    ("prune 50 % + int8 dynamic", {"prune_magnitude": {"amount": 0.5},
                                   "quantize_int8_dynamic": {}}),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="gpt-micro",
                        help="built-in model preset (default gpt-micro)")
    parser.add_argument("--run", default="", help="use the weights a past train run saved "
                        "(train.save_checkpoint) instead of training the preset here")
    parser.add_argument("--train-steps", type=loop.whole(0, loop.MAX_STEPS), default=150,
                        help="train the preset this "
                        "many steps first (default 150; 0 = random weights)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--repeats", type=loop.whole(1, loop.MAX_REPEATS), default=10,
                        help="timed generations per option "
                        "(interleaved rounds)")
    parser.add_argument("--warmup", type=loop.whole(0), default=2,
                        help="warmup generations per option")
    loop.add_order_arguments(parser)
    parser.add_argument("--batch-size", type=loop.whole(1), default=1,
                        help="sequences per generation")
    parser.add_argument("--prompt-len", type=loop.whole(1), default=64, help="prompt tokens")
    parser.add_argument("--gen-len", type=loop.whole(1), default=32, help="generated tokens")
    parser.add_argument("--eval-tokens", type=loop.whole(0), default=8192,
                        help="held-out tokens for perplexity and KL")
    parser.add_argument("--threads", type=loop.whole(0), default=0,
                        help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--only", default="", help="comma-separated substrings of option labels")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--record", default="", help="append the table as markdown to this file "
                        "(e.g. docs/benchmarks.md)")


class _Quiet:
    should_stop = False

    def poll(self) -> list:
        return []


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure(args: argparse.Namespace) -> dict:
    """Build fp32 and every option, time them interleaved, score quality; return the table."""
    import torch

    from profiler.config import RunConfig
    from profiler.engine import weights
    from profiler.engine.data import BatchSampler, load_corpus
    from profiler.engine.workloads.distill import pretrain_teacher
    from profiler.engine.workloads.generation import (
        eval_windows,
        generate_once,
        prompts_from,
        score,
    )
    from profiler.measure import sizes
    from profiler.measure.capabilities import detect, resolve_device
    from techniques import registry, runtime
    from techniques.registry import INFER_STAGES

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    caps = detect(device)
    torch.manual_seed(1337)
    config = RunConfig(workload="compress", device=str(device))
    if args.run:
        config.model.source, config.model.run_id = "run", args.run
    else:
        config.model.preset = args.preset
    base, origin = weights.load_model(config.model, device, dropout=0.0)
    corpus = load_corpus("stdlib", "", 2_000_000, 0.1, base.shape.vocab_size, 1337)
    if not args.run and args.train_steps:
        started = time.perf_counter()
        batches = BatchSampler(corpus.train, 16, min(128, base.shape.block_size), 1337, device)
        report = pretrain_teacher(runtime.TrainState.plain(base, device), batches, args.train_steps, 2e-3, lambda m: None, _Quiet())
        origin = (f"{args.preset}, {report.replace('teacher trained', 'trained here')} "
                  "(AdamW, lr 2e-3, batch 16)")
        _log(f"{report} in {time.perf_counter() - started:.0f} s")
    base.eval()

    wanted_labels = [s.strip() for s in args.only.split(",") if s.strip()]
    models: dict[str, runtime.TrainState] = {"fp32": runtime.TrainState.plain(base, device)}
    rows: list[dict] = [{"option": "fp32", "report": "the original model", "available": True}]
    for label, techniques in OPTIONS:
        if wanted_labels and not any(w in label for w in wanted_labels):
            continue
        row = {"option": label, "techniques": techniques, "available": True, "report": ""}
        rows.append(row)
        config.techniques = techniques
        try:
            wanted = runtime.plan(config, caps, INFER_STAGES)
            state = runtime.TrainState(config=config, device=device, caps=caps,
                                       model=copy.deepcopy(base), warn=lambda text: None)
            applied = runtime.apply_all(state, wanted)
        except (Unsupported, ValueError, registry.UnknownTechnique) as exc:
            row.update(available=False, report=str(exc))
            _log(f"{label}: unavailable: {exc}")
            continue
        row["report"] = "; ".join(a["report"] for a in applied)
        state.model.eval()
        models[label] = state
        _log(f"{label}: {row['report']}")

    prompts = prompts_from(corpus.val, args.batch_size, args.prompt_len, device)
    names = list(models)

    def generation(name: str) -> dict:
        result = generate_once(models[name], prompts, args.gen_len)
        return {key: result[key] for key in TIMED}

    candidates = [loop.Candidate(name, lambda n=name: generation(n)) for name in names]
    timed = loop.compare(candidates, TIMED, repeats=args.repeats, warmup=args.warmup,
                         order=args.order, seed=args.seed, log=_log)
    windows = eval_windows(corpus.val, 128, args.eval_tokens)
    # Scored at the timed batch size: dynamic int8's activation ranges come from the batch.
    quality = score([models[n] for n in names], windows, batch_size=args.batch_size)

    measured = {}
    for i, name in enumerate(names):
        params, nonzero = sizes.parameter_counts(models[name].model)
        figures = timed["candidates"][name]["metrics"]
        measured[name] = {
            "model_bytes": sizes.model_bytes(models[name].model),
            "sparsity": 1 - nonzero / params if params else None,
            **{f"{key}_distribution": figures[key]["distribution"] for key in TIMED},
            **{f"{key}_vs_fp32": figures[key]["vs_baseline"] for key in TIMED},
            "prefill_latency_p50_s": figures["prefill_latency_s"]["distribution"]["median"],
            "decode_latency_p50_s": figures["decode_latency_s"]["distribution"]["median"],
            "decode_tokens_per_s": figures["decode_tokens_per_s"]["distribution"]["median"],
            "perplexity": quality["perplexity"][i],
            "kl_to_fp32": quality["kl"][i] if i else 0.0,
            "kl_p99_to_fp32": quality["kl_p99"][i] if i else 0.0,
            "top1_agreement": quality["top1_agreement"][i] if i else 1.0,
        }
    ref = measured["fp32"]
    for row in rows:
        if not row["available"]:
            continue
        m = measured[row["option"]]
        row.update(m)
        row["bytes_ratio"] = m["model_bytes"] / ref["model_bytes"]
        row["prefill_ratio"] = m["prefill_latency_s_vs_fp32"]["ratio"]
        row["decode_latency_ratio"] = m["decode_latency_s_vs_fp32"]["ratio"]
        row["speedup"] = m["decode_tokens_per_s_vs_fp32"]["ratio"]
        row["perplexity_change_percent"] = ((m["perplexity"] / ref["perplexity"] - 1) * 100
                                            if m["perplexity"] and ref["perplexity"] else None)
    from profiler.measure.system import describe_host

    host = describe_host()
    return {
        "benchmark": "compress",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(args),
        "machine": {"cpu": host["cpu"], "cores_logical": host["cpu_cores_logical"],
                    "memory_total_bytes": host["memory_total_bytes"], "gpus": host["gpus"],
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "device": str(device),
                    "quantized_engine": torch.backends.quantized.engine},
        "model": origin, "parameters": base.parameter_count(),
        "settings": {"batch_size": args.batch_size, "prompt_len": args.prompt_len,
                     "gen_len": args.gen_len, "repeats": args.repeats, "warmup": args.warmup,
                     "order": args.order, "seed": args.seed, "eval_tokens": quality["tokens"],
                     "eval_batch_size": quality["batch_size"]},
        "rows": rows,
    }


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this measurement (options that differ from the defaults)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    parts = ["effiscope bench compress", args.preset]
    for key, value in vars(args).items():
        if key in defaults and key not in ("preset", "json", "record", "func") \
                and value != defaults[key]:
            parts.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(parts)


def _num(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, fmt)


def _gpu_text(gpus: list) -> str:
    names = [g.get("name", "GPU") if isinstance(g, dict) else str(g) for g in gpus or []]
    return ", ".join(names) if names else "no GPU"


def markdown(result: dict) -> str:
    """The table as markdown, with the command, machine, model and settings above it."""
    m, s = result["machine"], result["settings"]
    lines = [
        f"## Compression: quantization and pruning against fp32 ({result['date']})",
        "",
        f"Command: `{result['command'].strip()}`",
        "",
        f"Machine: {m['cpu']}, {m['cores_logical']} logical cores, "
        f"{m['memory_total_bytes'] / 2**30:.0f} GiB, {_gpu_text(m['gpus'])}; "
        f"Python {m['python']}, torch {m['torch']} (threads: {m['torch_threads']}, quantized "
        f"engine {m['quantized_engine']}), device {m['device']}.",
        f"Model: {result['model']} ({result['parameters']:,} parameters). Generation: batch "
        f"{s['batch_size']}, prompt {s['prompt_len']}, {s['gen_len']} new tokens, greedy, KV "
        f"cache; {s['repeats']} timed generations per option after {s['warmup']} warmup, "
        f"interleaved ({s['order']} order). Quality on {s['eval_tokens']:,} held-out tokens, "
        f"scored {s.get('eval_batch_size', 'n/a')} window(s) of 128 per forward pass (the "
        "timed batch size: dynamic int8 takes its activation ranges from the whole batch, so "
        "its quality depends on batch composition).",
        "",
        "| option | weights (× fp32) | prefill | (× fp32) | decode per token | (× fp32) | "
        "decode tokens/s | (× fp32) | perplexity (Δ %) | KL(fp32‖option) mean / p99 | "
        "top-1 agreement | sparsity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if not row["available"]:
            lines.append(f"| {row['option']} | unavailable: {row['report']} |" + " |" * 10)
            continue
        timed = []
        for key, unit, scale in (("prefill_latency_s", "ms", 1e3), ("decode_latency_s", "ms", 1e3),
                                 ("decode_tokens_per_s", "tokens/s", 1.0)):
            timed.append(describe(row[f"{key}_distribution"], unit, scale))
            timed.append("baseline" if row["option"] == "fp32"
                         else describe_ratio(row[f"{key}_vs_fp32"]))
        lines.append(
            f"| {row['option']} | {row['model_bytes'] / 2**20:.2f} MiB "
            f"({_num(row['bytes_ratio'], '.2f')}) | " + " | ".join(timed) +
            f" | {_num(row['perplexity'], '.3f')} ({_num(row['perplexity_change_percent'], '+.2f')}) "
            f"| {_num(row['kl_to_fp32'], '.4f')} / {_num(row.get('kl_p99_to_fp32'), '.4f')} "
            f"| {_num(row.get('top1_agreement'), '.1%')} | {_num(row['sparsity'], '.1%')} |")
    lines += ["", "Timed figures: median over the interleaved generations with its 95 % interval; "
              "ratios option / fp32 of the medians with a 95 % bootstrap interval, \"no "
              "significant difference\" where it contains 1. Below 1 is smaller or faster for "
              "bytes and latency, above 1 is faster for tokens/s."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from profiler.config import ConfigError
    from profiler.models.presets import GPT_PRESETS

    if not args.run and args.preset not in GPT_PRESETS:
        print(f"effiscope: {args.preset!r} is not a built-in model; choose one of "
              f"{', '.join(GPT_PRESETS)}", file=sys.stderr)
        return 2
    problem = loop.only_problem(args.only, [label for label, _ in OPTIONS], "option")
    if problem:
        return loop.usage_error(problem)
    from profiler.config import RunConfig, validate

    try:  # the run config the options are measured with: the same checks as `effiscope run`
        probe = RunConfig(workload="compress", device=args.device,
                          techniques={"quantize_int8_dynamic": {}})
        probe.infer.batch_size, probe.infer.prompt_len = args.batch_size, args.prompt_len
        probe.infer.gen_len, probe.infer.repeats = args.gen_len, args.repeats
        probe.infer.warmup_runs, probe.infer.eval_tokens = args.warmup, args.eval_tokens
        if args.run:
            probe.model.source, probe.model.run_id = "run", args.run
        else:
            probe.model.preset = args.preset
        validate(probe)
    except ConfigError as exc:
        return loop.usage_error(loop.with_flag(exc, {
            "infer.gen_len": "--gen-len", "infer.prompt_len": "--prompt-len",
            "infer.batch_size": "--batch-size", "device": "--device", "model.run_id": "--run"}))
    try:
        result = measure(args)
    except (ConfigError, ValueError, Unsupported) as exc:
        print(f"effiscope: {exc}", file=sys.stderr)
        return 2
    text = markdown(result)
    if args.record:
        path = Path(args.record)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = "" if path.exists() else "# Benchmarks\n\nMeasured with `effiscope bench ...`.\n\n"
        files.append_text(path, head + ("\n" if not head else "") + text)  # never onto a FIFO
        _log(f"appended to {path}")
    print(json.dumps(result, indent=2) if args.json else text)
    return 0
