"""`effiscope bench compress`: what each quantization and pruning option costs and buys here.

One process, one model: the fp32 original and every compressed copy live side by side; their
generations are interleaved repeat by repeat (fp32, A, B, ..., then rotated), so drift of the
machine hits all alike. Each option is reported against fp32 as ratios — weights in memory,
prefill and per-token decode latency (p50), decode tokens/s — with its quality delta:
perplexity on held-out text and KL(fp32‖option) of the next-token distributions.
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

from profiler.errors import Unsupported

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
    ("2:4 semi-structured", {"prune_semi_structured": {}}),
    ("prune 50 % + int8 dynamic", {"prune_magnitude": {"amount": 0.5},
                                   "quantize_int8_dynamic": {}}),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default="gpt-micro",
                        help="built-in model preset (default gpt-micro)")
    parser.add_argument("--run", default="", help="use the weights a past train run saved "
                        "(train.save_checkpoint) instead of training the preset here")
    parser.add_argument("--train-steps", type=int, default=150, help="train the preset this "
                        "many steps first (default 150; 0 = random weights)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=10, help="timed generations per option")
    parser.add_argument("--warmup", type=int, default=2, help="warmup generations per option")
    parser.add_argument("--batch-size", type=int, default=1, help="sequences per generation")
    parser.add_argument("--prompt-len", type=int, default=64, help="prompt tokens")
    parser.add_argument("--gen-len", type=int, default=32, help="generated tokens")
    parser.add_argument("--eval-tokens", type=int, default=8192,
                        help="held-out tokens for perplexity and KL")
    parser.add_argument("--threads", type=int, default=0,
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

    from profiler import sizes, weights
    from profiler.capabilities import detect
    from profiler.config import RunConfig
    from profiler.data import BatchSampler, load_corpus
    from profiler.stats import percentile
    from profiler.workloads.distill import pretrain_teacher
    from profiler.workloads.infer import (
        apply_compression,
        eval_windows,
        generate_once,
        inference_techniques,
        prompts_from,
        score,
    )
    from profiler.workloads.train import resolve_device
    from techniques import registry, runtime

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
        report = pretrain_teacher(base, batches, args.train_steps, 2e-3, lambda m: None, _Quiet())
        origin = (f"{args.preset}, {report.replace('teacher trained', 'trained here')} "
                  "(AdamW, lr 2e-3, batch 16)")
        _log(f"{report} in {time.perf_counter() - started:.0f} s")
    base.eval()

    wanted_labels = [s.strip() for s in args.only.split(",") if s.strip()]
    models: dict[str, torch.nn.Module] = {"fp32": base}
    rows: list[dict] = [{"option": "fp32", "report": "the original model", "available": True}]
    for label, techniques in OPTIONS:
        if wanted_labels and not any(w in label for w in wanted_labels):
            continue
        row = {"option": label, "techniques": techniques, "available": True, "report": ""}
        rows.append(row)
        config.techniques = techniques
        try:
            wanted = inference_techniques(config, caps, lambda text: None)
            state = runtime.TrainState(config=config, device=device, caps=caps,
                                       model=copy.deepcopy(base), warn=lambda text: None)
            applied = apply_compression(state, wanted)
        except (Unsupported, ValueError, registry.UnknownTechnique) as exc:
            row.update(available=False, report=str(exc))
            _log(f"{label}: unavailable: {exc}")
            continue
        row["report"] = "; ".join(a["report"] for a in applied)
        models[label] = state.model.eval()
        _log(f"{label}: {row['report']}")

    prompts = prompts_from(corpus.val, args.batch_size, args.prompt_len, device)
    names = list(models)
    timings: dict[str, list[dict]] = {name: [] for name in names}
    for index in range(args.warmup + args.repeats):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:  # rotate who goes first
            result = generate_once(models[name], prompts, args.gen_len, device)
            if index >= args.warmup:
                timings[name].append(result)
        _log(f"repeat {index + 1}/{args.warmup + args.repeats} done")
    windows = eval_windows(corpus.val, 128, args.eval_tokens)
    quality = score([models[n] for n in names], windows, device, batch_size=4)

    def p50(name: str, key: str) -> float | None:
        if key == "decode_latency_s":
            return percentile([s for r in timings[name] for s in r["_decode_steps_s"]], 50)
        return percentile([r[key] for r in timings[name]], 50)

    def tokens_per_s(name: str) -> float | None:
        steps = sum(sum(r["_decode_steps_s"]) for r in timings[name])
        return sum(r["_decode_tokens"] for r in timings[name]) / steps if steps else None

    measured = {}
    for i, name in enumerate(names):
        params, nonzero = sizes.parameter_counts(models[name])
        measured[name] = {
            "model_bytes": sizes.model_bytes(models[name]),
            "sparsity": 1 - nonzero / params if params else None,
            "prefill_latency_p50_s": p50(name, "prefill_latency_s"),
            "decode_latency_p50_s": p50(name, "decode_latency_s"),
            "decode_tokens_per_s": tokens_per_s(name),
            "perplexity": quality["perplexity"][i],
            "kl_to_fp32": quality["kl"][i] if i else 0.0,
        }
    ref = measured["fp32"]
    for row in rows:
        if not row["available"]:
            continue
        m = measured[row["option"]]
        row.update(m)
        row["bytes_ratio"] = m["model_bytes"] / ref["model_bytes"]
        row["prefill_ratio"] = _ratio(m["prefill_latency_p50_s"], ref["prefill_latency_p50_s"])
        row["decode_latency_ratio"] = _ratio(m["decode_latency_p50_s"], ref["decode_latency_p50_s"])
        row["speedup"] = _ratio(m["decode_tokens_per_s"], ref["decode_tokens_per_s"])
        row["perplexity_change_percent"] = ((m["perplexity"] / ref["perplexity"] - 1) * 100
                                            if m["perplexity"] and ref["perplexity"] else None)
    from profiler.system import describe_host

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
                     "eval_tokens": quality["tokens"]},
        "rows": rows,
    }


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this measurement (options that differ from the defaults)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    parts = ["effiscope bench compress", args.preset]
    for key, value in vars(args).items():
        if key in defaults and key not in ("preset", "json", "record") and value != defaults[key]:
            parts.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    return " ".join(parts)


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


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
        f"interleaved. Quality on {s['eval_tokens']:,} held-out tokens.",
        "",
        "| option | weights (× fp32) | prefill p50 (×) | decode ms/token p50 (×) | decode "
        "tokens/s (×) | perplexity (Δ %) | KL(fp32‖option) | sparsity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if not row["available"]:
            lines.append(f"| {row['option']} | unavailable: {row['report']} | | | | | | |")
            continue
        lines.append(
            f"| {row['option']} | {row['model_bytes'] / 2**20:.2f} MiB "
            f"({_num(row['bytes_ratio'], '.2f')}) "
            f"| {_num(row['prefill_latency_p50_s'], '.2f', 1e3)} ms "
            f"({_num(row['prefill_ratio'], '.2f')}) "
            f"| {_num(row['decode_latency_p50_s'], '.2f', 1e3)} "
            f"({_num(row['decode_latency_ratio'], '.2f')}) "
            f"| {_num(row['decode_tokens_per_s'], ',.0f')} ({_num(row['speedup'], '.2f')}) "
            f"| {_num(row['perplexity'], '.3f')} ({_num(row['perplexity_change_percent'], '+.2f')}) "
            f"| {_num(row['kl_to_fp32'], '.4f')} | {_num(row['sparsity'], '.1%')} |")
    lines += ["", "Ratios are option / fp32 measured in the same run: below 1 is smaller or "
              "faster for bytes and latency, above 1 is faster for tokens/s."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from profiler.config import ConfigError
    from profiler.models.presets import GPT_PRESETS

    if not args.run and args.preset not in GPT_PRESETS:
        print(f"effiscope: {args.preset!r} is not a built-in model; choose one of "
              f"{', '.join(GPT_PRESETS)}", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.warmup < 0 or args.gen_len < 1 or args.prompt_len < 1:
        print("effiscope: --repeats, --gen-len and --prompt-len must be 1 or more, --warmup 0 "
              "or more", file=sys.stderr)
        return 2
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
        with path.open("a", encoding="utf-8") as fh:
            fh.write(head + ("\n" if not head else "") + text)
        _log(f"appended to {path}")
    print(json.dumps(result, indent=2) if args.json else text)
    return 0
