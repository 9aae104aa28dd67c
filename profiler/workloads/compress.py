"""The compress workload: apply compression techniques, then measure original and compressed
side by side — parameters, bytes in memory and on disk, latency, tokens/s, perplexity, and the
KL divergence of their next-token distributions — as one comparison table.

Both models are timed in the same run with their generations interleaved (baseline, compressed,
baseline, ...), so a slower or busier moment of the machine hits both alike.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from profiler import checkpoints
from profiler.capabilities import detect
from profiler.config import RunConfig
from profiler.data import BatchSampler, load_corpus
from profiler.stats import figure
from profiler.workloads.infer import (
    apply_compression,
    eval_windows,
    generate_once,
    inference_techniques,
    latency_figures,
    prompts_from,
    score,
)
from profiler.workloads.train import resolve_device
from techniques import registry, runtime

Emit = Callable[[dict], None]
VARIANTS = ("baseline", "compressed")


def finetune(model, batches: BatchSampler, steps: int, lr: float, emit: Emit,
             control: Any) -> str:
    """A few AdamW steps on the pruned model; pruning masks keep pruned weights at zero."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        if control.should_stop:
            break
        x, y = batches.next()
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        emit({"type": "sample", "step": step, "time": time.perf_counter() - started,
              "phase": "finetune", "metrics": {"loss_train": losses[-1]}})
    model.eval()
    if not losses:
        return "no fine-tuning steps ran (stopped)"
    return (f"{len(losses)} AdamW steps at lr {lr:g}: train loss {losses[0]:.3f} -> "
            f"{losses[-1]:.3f}, pruned weights held at zero by their masks")


def measure_size(model, folder: str) -> dict:
    params, nonzero = checkpoints.parameter_counts(model)
    try:
        disk: int | None = checkpoints.disk_bytes(model, folder)
    except Exception:  # noqa: BLE001 - a format safetensors cannot hold: n/a, not a failure
        disk = None
    return {"parameters": params, "nonzero_parameters": nonzero,
            "sparsity": 1 - nonzero / params if params else None,
            "model_bytes": checkpoints.model_bytes(model), "disk_bytes": disk}


def comparison_rows(size: dict, speed: dict, quality: dict) -> list[dict]:
    """One row per measure: baseline, compressed, their ratio and difference, unit, how."""
    rows = []

    def add(key, label, unit, base, comp, how, better="lower"):
        ratio = comp / base if base not in (None, 0) and comp is not None else None
        delta = comp - base if base is not None and comp is not None else None
        rows.append({"key": key, "label": label, "unit": unit, "baseline": base,
                     "compressed": comp, "ratio": ratio, "delta": delta, "better": better,
                     "how": how})

    b, c = size["baseline"], size["compressed"]
    add("parameters", "Parameters", "", b["parameters"], c["parameters"],
        "elements of every weight tensor (quantized weights counted as their int values)")
    add("nonzero_parameters", "Non-zero parameters", "", b["nonzero_parameters"],
        c["nonzero_parameters"], "weights that are not exactly zero, counted")
    add("sparsity", "Sparsity", "", b["sparsity"], c["sparsity"],
        "share of exact zeros over all weights (biases and norms included)", "higher")
    add("model_bytes", "Weights in memory", "bytes", b["model_bytes"], c["model_bytes"],
        "bytes of the weight tensors as held (int8 values + scales for quantized layers)")
    add("disk_bytes", "Weights on disk", "bytes", b["disk_bytes"], c["disk_bytes"],
        "size of a safetensors file of those tensors, written to a temporary folder")
    for key, label, unit, better in (
        ("prefill_latency_p50_s", "Prefill latency p50", "s", "lower"),
        ("ttft_p50_s", "Time to first token p50", "s", "lower"),
        ("decode_latency_p50_s", "Decode latency per token p50", "s", "lower"),
        ("decode_latency_p90_s", "Decode latency per token p90", "s", "lower"),
        ("decode_tokens_per_s", "Decode throughput", "tokens/s", "higher"),
    ):
        add(key, label, unit, speed["baseline"].get(key, {}).get("value"),
            speed["compressed"].get(key, {}).get("value"),
            speed["compressed"].get(key, {}).get("how", "not measured"), better)
    add("perplexity", "Perplexity", "", quality["perplexity"][0], quality["perplexity"][1],
        f"exp(mean token cross-entropy) on {quality['tokens']:,} held-out tokens")
    add("loss_val", "Validation loss", "nats/token", quality["loss"][0], quality["loss"][1],
        "mean token cross-entropy on the same text")
    add("kl_to_baseline", "KL(baseline‖compressed)", "nats/token",
        0.0 if quality["tokens"] else None, quality["kl"][1],
        "mean over tokens of the KL divergence of the next-token distributions")
    return rows


def quality_sentence(size: dict, speed_rows: dict, quality: dict, finetune_steps: int = 0) -> str:
    """The paper's 'performance loss after compression', in one plain sentence."""
    ppl_b, ppl_c = quality["perplexity"]
    parts = []
    if ppl_b is not None and ppl_c is not None:
        change = (ppl_c / ppl_b - 1) * 100
        verb = "rose" if change > 0 else "fell" if change < 0 else "stayed the same,"
        parts.append(f"Perplexity {verb} from {ppl_b:.4g} to {ppl_c:.4g} ({change:+.2f} %), "
                     f"KL(baseline‖compressed) = {quality['kl'][1]:.3g} nats/token")
    else:
        parts.append("Quality was not measured (infer.eval_tokens = 0)")
    mem_b, mem_c = size["baseline"]["model_bytes"], size["compressed"]["model_bytes"]
    parts.append(f"the weights take {mem_c / mem_b:.0%} of the original bytes in memory")
    speed = speed_rows.get("decode_tokens_per_s")
    if speed and speed["ratio"] is not None:
        parts.append(f"decoding runs at {speed['ratio']:.2f}x the original's tokens/s")
    if finetune_steps:
        parts.append(f"the compressed model also had {finetune_steps} fine-tuning steps on the "
                     "text, so part of the quality change is training, not compression")
    return "; ".join(parts) + "."


def run(config: RunConfig, emit: Emit, control: Any) -> dict:
    """Compress a copy of the model and compare it with the original; return the summary."""
    if checkpoints.model_kind(config.model) == "hf-encoder":
        from profiler.workloads import encode

        return encode.run_compress(config, emit, control)  # embeddings compared, not perplexity
    cfg = config.infer
    device = resolve_device(config.device)
    caps = {**detect(device), **checkpoints.model_caps(config.model)}

    def warn(text: str) -> None:
        emit({"type": "event", "kind": "warning", "message": text})

    wanted = inference_techniques(config, caps, warn)  # refuse before any work
    torch.manual_seed(config.seed)
    setup_started = time.perf_counter()
    baseline, origin = checkpoints.load_model(config.model, device, dropout=0.0)
    baseline.eval()
    shape = baseline.shape
    corpus = load_corpus(config.data.source, config.data.path, config.data.max_train_bytes,
                         config.data.val_fraction, shape.vocab_size, config.seed,
                         tokenizer=getattr(baseline, "tokenizer", None))
    # Techniques that are not compression (e.g. the attention kernel) apply to both models, so
    # the comparison isolates what compression does.
    shared = {n: p for n, p in wanted.items() if registry.get(n).category != "compression"}
    applied = apply_compression(runtime.TrainState(config=config, device=device, caps=caps,
                                                   model=baseline, warn=warn), shared)
    compressed = copy.deepcopy(baseline)
    state = runtime.TrainState(config=config, device=device, caps=caps, model=compressed, warn=warn)
    tune = None
    if config.compress.finetune_steps:
        batches = BatchSampler(corpus.train, config.train.batch_size, config.train.seq_len,
                               config.seed, device)
        tune = lambda: finetune(compressed, batches, config.compress.finetune_steps,  # noqa: E731
                                config.compress.finetune_learning_rate, emit, control)
    emit({"type": "started", "run": {
        "workload": "compress", "device": str(device),
        "model": {"preset": checkpoints.model_name(config.model), "origin": origin,
                  "parameters": baseline.parameter_count(), **shape.as_dict()},
        "data": corpus.description, "batch_size": cfg.batch_size, "prompt_len": cfg.prompt_len,
        "gen_len": cfg.gen_len, "repeats": cfg.repeats, "warmup_runs": cfg.warmup_runs,
        "techniques": [{"name": n, "params": p} for n, p in wanted.items()],
        "capabilities": caps, "setup_time_s": time.perf_counter() - setup_started,
    }})
    applied += apply_compression(state, {n: p for n, p in wanted.items() if n not in shared},
                                 tune)
    compressed = state.model
    compressed.eval()
    for item in applied:
        emit({"type": "event", "kind": "info", "step": 0, "technique": item["name"],
              "message": f"{item['label']}: {item['report']}"})
    models = {"baseline": baseline, "compressed": compressed}
    with tempfile.TemporaryDirectory(prefix="effiscope-size-") as folder:
        size = {name: measure_size(model, folder) for name, model in models.items()}

    prompts = prompts_from(corpus.val, cfg.batch_size, cfg.prompt_len, device)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    run_started = time.perf_counter()
    stopped_early = False
    total = cfg.warmup_runs + cfg.repeats
    for index in range(1, total + 1):
        control.poll()
        if control.should_stop:
            stopped_early = True
            break
        warm = index <= cfg.warmup_runs
        metrics: dict[str, float | None] = {}
        # Alternate which model goes first, so neither always runs right after the other.
        order = VARIANTS if index % 2 else VARIANTS[::-1]
        for name in order:
            result = generate_once(models[name], prompts, cfg.gen_len, device)
            if not warm:
                runs[name].append(result)
            for key in ("prefill_latency_s", "ttft_s", "decode_latency_s", "decode_tokens_per_s"):
                metrics[f"{name}_{key}"] = result[key]
        emit({"type": "sample", "step": index, "time": time.perf_counter() - run_started,
              "phase": "warmup" if warm else "measure", "metrics": metrics})

    quality = {"loss": [None, None], "perplexity": [None, None], "kl": [None, None], "tokens": 0}
    if cfg.eval_tokens and not stopped_early:
        windows = eval_windows(corpus.val, cfg.eval_seq_len, cfg.eval_tokens)
        quality = score([baseline, compressed], windows, device)
        emit({"type": "sample", "step": total, "time": time.perf_counter() - run_started,
              "phase": "eval", "metrics": {"perplexity": quality["perplexity"][1],
                                           "baseline_perplexity": quality["perplexity"][0],
                                           "kl_to_baseline": quality["kl"][1]}})

    window = (f"over {len(runs['compressed'])} interleaved timed generations per model "
              f"({cfg.warmup_runs} warmup excluded), batch {cfg.batch_size}, prompt "
              f"{cfg.prompt_len}, {cfg.gen_len} new tokens")
    speed = {name: latency_figures(runs[name], window=window) for name in VARIANTS}
    rows = comparison_rows(size, speed, quality)
    by_key = {row["key"]: row for row in rows}
    sentence = quality_sentence(size, by_key, quality, config.compress.finetune_steps)
    emit({"type": "event", "kind": "info", "message": sentence})

    figures = {}
    for row in rows:
        if row["key"] == "kl_to_baseline":
            figures[row["key"]] = figure(row["compressed"], row["unit"], row["how"])
            continue
        figures[row["key"]] = figure(row["compressed"], row["unit"],
                                     f"compressed model: {row['how']}")
        figures[f"baseline_{row['key']}"] = figure(row["baseline"], row["unit"],
                                                   f"original model: {row['how']}")
        if row["ratio"] is not None and row["unit"] != "":
            figures[f"{row['key']}_ratio"] = figure(row["ratio"], "x", "compressed / original")
    ppl = quality["perplexity"]
    figures["perplexity_change_percent"] = figure(
        (ppl[1] / ppl[0] - 1) * 100 if ppl[0] and ppl[1] else None, "%",
        "(compressed / original perplexity - 1) x 100")
    decode_ratio = by_key["decode_tokens_per_s"]["ratio"]
    figures["speedup_decode"] = figure(decode_ratio, "x", "compressed / original decode tokens/s")
    return {"workload": "compress", "stopped_early": stopped_early,
            "stop_reason": "stopped by request" if stopped_early else "all measurements done",
            "steps_completed": index if not stopped_early else index - 1,
            "measured_steps": len(runs["compressed"]), "device": str(device),
            "parameters": size["baseline"]["parameters"], "model": origin,
            "techniques": applied, "comparison": rows, "quality_loss": sentence,
            "figures": figures}
