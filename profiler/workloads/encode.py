"""Encoder models (BERT-style, sentence embedders) under the infer and compress workloads.

Not a workload of its own: infer.run and compress.run hand encoder models here. An encoder
generates nothing, so what is measured is one forward pass over a batch of held-out text
(infer.batch_size sequences of infer.prompt_len tokens): its latency (p50 / p90 / p99 over the
timed repeats after warmup), tokens/s and sequences/s. Compression is judged on the outputs:
the cosine similarity and the largest absolute difference between the original and the
compressed model's embeddings of the same held-out windows, instead of perplexity.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from profiler import checkpoints
from profiler.capabilities import detect
from profiler.config import RunConfig
from profiler.data import load_corpus
from profiler.stats import figure, percentile
from profiler.system import SystemSampler
from profiler.workloads.infer import (
    apply_compression,
    eval_windows,
    inference_techniques,
    prompts_from,
)
from profiler.workloads.train import resolve_device, synchronize
from techniques import runtime

Emit = Callable[[dict], None]


def measures(cfg: Any) -> str:
    return (f"encoder model, no generation: each timed run is one forward pass over "
            f"{cfg.batch_size} sequences of {cfg.prompt_len} held-out tokens (latency of the "
            "pass; throughput = tokens or sequences / that time)")


def _setup(config: RunConfig, emit: Emit):
    device = resolve_device(config.device)
    caps = {**detect(device), **checkpoints.model_caps(config.model)}

    def warn(text: str) -> None:
        emit({"type": "event", "kind": "warning", "message": text})

    wanted = inference_techniques(config, caps, warn)  # refuse before any work
    torch.manual_seed(config.seed)
    model, origin = checkpoints.load_model(config.model, device, dropout=0.0)
    model.eval()
    corpus = load_corpus(config.data.source, config.data.path, config.data.max_train_bytes,
                         config.data.val_fraction, model.shape.vocab_size, config.seed,
                         tokenizer=model.tokenizer)
    return device, caps, warn, wanted, model, origin, corpus


@torch.no_grad()
def encode_once(model, batch: torch.Tensor, device: torch.device) -> dict:
    """One timed forward pass of the encoder over the batch."""
    synchronize(device)
    started = time.perf_counter()
    model(batch)
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"encode_latency_s": seconds,
            "encode_tokens_per_s": batch.numel() / seconds if seconds > 0 else None,
            "encode_sequences_per_s": batch.size(0) / seconds if seconds > 0 else None}


def latency_figures(runs: list[dict], window: str) -> dict:
    values = [r["encode_latency_s"] for r in runs]
    out = {f"encode_latency_p{q}_s": figure(percentile(values, q), "s",
                                            f"{q}th percentile of one forward pass {window}")
           for q in (50, 90, 99)}
    total = sum(values)
    tokens = sum(r["encode_tokens_per_s"] * r["encode_latency_s"] for r in runs
                 if r["encode_tokens_per_s"] is not None)
    sequences = sum(r["encode_sequences_per_s"] * r["encode_latency_s"] for r in runs
                    if r["encode_sequences_per_s"] is not None)
    out["encode_tokens_per_s"] = figure(tokens / total if total > 0 else None, "tokens/s",
                                        f"tokens encoded / summed pass time {window}")
    out["encode_sequences_per_s"] = figure(sequences / total if total > 0 else None,
                                           "sequences/s", f"sequences / summed pass time {window}")
    return out


def _timed_loop(models: dict, batch: torch.Tensor, cfg: Any, device, emit: Emit,
                control: Any, sampler: SystemSampler) -> tuple[dict, bool, int]:
    """Warmup, then timed passes; with two models their passes are interleaved."""
    runs: dict[str, list[dict]] = {name: [] for name in models}
    started = time.perf_counter()
    total = cfg.warmup_runs + cfg.repeats
    done = 0
    for index in range(1, total + 1):
        control.poll()
        if control.should_stop:
            return runs, True, done
        warm = index <= cfg.warmup_runs
        names = list(models) if index % 2 else list(models)[::-1]
        metrics: dict = {}
        for name in names:
            result = encode_once(models[name], batch, device)
            if not warm:
                runs[name].append(result)
            prefix = f"{name}_" if len(models) > 1 else ""
            metrics.update({prefix + k: v for k, v in result.items()})
        done = index
        emit({"type": "sample", "step": index, "time": time.perf_counter() - started,
              "phase": "warmup" if warm else "measure", "metrics": {**metrics,
                                                                   **sampler.latest()}})
    return runs, False, done


def run_infer(config: RunConfig, emit: Emit, control: Any) -> dict:
    cfg = config.infer
    setup_started = time.perf_counter()
    device, caps, warn, wanted, model, origin, corpus = _setup(config, emit)
    state = runtime.TrainState(config=config, device=device, caps=caps, model=model, warn=warn)
    applied = apply_compression(state, wanted)
    model = state.model
    batch = prompts_from(corpus.val, cfg.batch_size, cfg.prompt_len, device)
    params, nonzero = checkpoints.parameter_counts(model)
    sampler = SystemSampler(period_s=0.2, gpu_index=(device.index or 0) if device.type == "cuda"
                            else None).start()
    emit({"type": "started", "run": {
        "workload": "infer", "device": str(device), "measures": measures(cfg),
        "model": {"preset": checkpoints.model_name(config.model), "origin": origin,
                  "parameters": params, **model.shape.as_dict()},
        "data": corpus.description, "batch_size": cfg.batch_size, "prompt_len": cfg.prompt_len,
        "repeats": cfg.repeats, "warmup_runs": cfg.warmup_runs, "techniques": applied,
        "capabilities": caps, "setup_time_s": time.perf_counter() - setup_started}})
    emit({"type": "event", "kind": "info", "step": 0, "message": measures(cfg).capitalize()})
    for item in applied:
        emit({"type": "event", "kind": "info", "step": 0, "technique": item["name"],
              "message": f"{item['label']}: {item['report']}"})
    try:
        runs, stopped, done = _timed_loop({"model": model}, batch, cfg, device, emit, control,
                                          sampler)
    finally:
        sampler.read_now()
        sampler.stop()
    measured = runs["model"]
    window = (f"over {len(measured)} timed passes ({cfg.warmup_runs} warmup excluded), batch "
              f"{cfg.batch_size} x {cfg.prompt_len} tokens")
    figures = latency_figures(measured, window)
    figures.update({
        "parameters": figure(params, "", "parameters of the model as run"),
        "nonzero_parameters": figure(nonzero, "", "parameters that are not exactly zero"),
        "model_bytes": figure(checkpoints.model_bytes(model), "bytes",
                              "bytes of the weights in memory"),
        "peak_rss_bytes": figure(sampler.peaks().get("rss_bytes"), "bytes",
                                 "highest worker RSS seen"),
        "perplexity": figure(None, "", "n/a: an encoder predicts no next token"),
    })
    return {"workload": "infer", "model_kind": "hf-encoder", "measures": measures(cfg),
            "stopped_early": stopped,
            "stop_reason": "stopped by request" if stopped else "all passes done",
            "steps_completed": done, "measured_steps": len(measured), "device": str(device),
            "parameters": params, "model": origin, "techniques": applied, "figures": figures}


@torch.no_grad()
def compare_embeddings(baseline, compressed, windows: list[torch.Tensor], device,
                       batch_size: int = 8) -> dict:
    """Cosine similarity (mean, min) and the largest absolute difference of the two models'
    embeddings of the same windows."""
    cosines: list[float] = []
    max_diff = 0.0
    for start in range(0, len(windows), batch_size):
        batch = torch.stack(windows[start:start + batch_size])[:, :-1].to(device)  # seq_len
        a, b = baseline(batch).float(), compressed(batch).float()
        cosines += F.cosine_similarity(a, b, dim=-1).tolist()
        max_diff = max(max_diff, float((a - b).abs().max()))
    if not cosines:
        return {"cosine_mean": None, "cosine_min": None, "max_abs_diff": None, "windows": 0}
    return {"cosine_mean": sum(cosines) / len(cosines), "cosine_min": min(cosines),
            "max_abs_diff": max_diff, "windows": len(cosines)}


def run_compress(config: RunConfig, emit: Emit, control: Any) -> dict:
    from profiler.workloads.compress import measure_size

    cfg = config.infer
    setup_started = time.perf_counter()
    device, caps, warn, wanted, baseline, origin, corpus = _setup(config, emit)
    if config.compress.finetune_steps:
        warn("compress.finetune_steps is ignored for an encoder model: it has no language "
             "modelling head to fine-tune with")
    compressed = copy.deepcopy(baseline)
    state = runtime.TrainState(config=config, device=device, caps=caps, model=compressed,
                               warn=warn)
    emit({"type": "started", "run": {
        "workload": "compress", "device": str(device), "measures": measures(cfg),
        "model": {"preset": checkpoints.model_name(config.model), "origin": origin,
                  "parameters": baseline.parameter_count(), **baseline.shape.as_dict()},
        "data": corpus.description, "batch_size": cfg.batch_size, "prompt_len": cfg.prompt_len,
        "repeats": cfg.repeats, "warmup_runs": cfg.warmup_runs,
        "techniques": [{"name": n, "params": p} for n, p in wanted.items()],
        "capabilities": caps, "setup_time_s": time.perf_counter() - setup_started}})
    applied = apply_compression(state, wanted)
    compressed = state.model
    compressed.eval()
    for item in applied:
        emit({"type": "event", "kind": "info", "step": 0, "technique": item["name"],
              "message": f"{item['label']}: {item['report']}"})
    models = {"baseline": baseline, "compressed": compressed}
    with tempfile.TemporaryDirectory(prefix="effiscope-size-") as folder:
        size = {name: measure_size(model, folder) for name, model in models.items()}
    batch = prompts_from(corpus.val, cfg.batch_size, cfg.prompt_len, device)
    sampler = SystemSampler(period_s=0.2, gpu_index=None).start()
    try:
        runs, stopped, done = _timed_loop(models, batch, cfg, device, emit, control, sampler)
    finally:
        sampler.stop()
    quality = {"cosine_mean": None, "cosine_min": None, "max_abs_diff": None, "windows": 0}
    if cfg.eval_tokens and not stopped:
        windows = eval_windows(corpus.val, cfg.eval_seq_len, cfg.eval_tokens)
        quality = compare_embeddings(baseline, compressed, windows, device)
        emit({"type": "sample", "step": done, "time": 0.0, "phase": "eval", "metrics": {
            "embedding_cosine_mean": quality["cosine_mean"],
            "embedding_max_abs_diff": quality["max_abs_diff"]}})
    window = (f"over {len(runs['compressed'])} interleaved timed passes per model "
              f"({cfg.warmup_runs} warmup excluded), batch {cfg.batch_size} x {cfg.prompt_len}")
    speed = {name: latency_figures(runs[name], window) for name in models}
    rows = comparison_rows(size, speed, quality, cfg.eval_seq_len)
    sentence = quality_sentence(size, {r["key"]: r for r in rows}, quality)
    emit({"type": "event", "kind": "info", "message": sentence})
    figures = {}
    for row in rows:
        figures[row["key"]] = figure(row["compressed"], row["unit"], f"compressed model: "
                                     f"{row['how']}")
        if row["baseline"] is not None and not row["key"].startswith("embedding_"):
            figures[f"baseline_{row['key']}"] = figure(row["baseline"], row["unit"],
                                                       f"original model: {row['how']}")
        if row["ratio"] is not None and row["unit"]:
            figures[f"{row['key']}_ratio"] = figure(row["ratio"], "x", "compressed / original")
    return {"workload": "compress", "model_kind": "hf-encoder", "measures": measures(cfg),
            "stopped_early": stopped,
            "stop_reason": "stopped by request" if stopped else "all measurements done",
            "steps_completed": done, "measured_steps": len(runs["compressed"]),
            "device": str(device), "parameters": size["baseline"]["parameters"], "model": origin,
            "techniques": applied, "comparison": rows, "quality_loss": sentence,
            "figures": figures}


def comparison_rows(size: dict, speed: dict, quality: dict, seq_len: int) -> list[dict]:
    """Rows in the compress workload's format: baseline, compressed, ratio, delta, unit, how."""
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
    add("sparsity", "Sparsity", "", b["sparsity"], c["sparsity"],
        "share of exact zeros over all weights", "higher")
    add("model_bytes", "Weights in memory", "bytes", b["model_bytes"], c["model_bytes"],
        "bytes of the weight tensors as held (int8 values + scales for quantized layers)")
    add("disk_bytes", "Weights on disk", "bytes", b["disk_bytes"], c["disk_bytes"],
        "size of a safetensors file of those tensors")
    for key, label, unit, better in (
        ("encode_latency_p50_s", "Forward pass p50", "s", "lower"),
        ("encode_latency_p90_s", "Forward pass p90", "s", "lower"),
        ("encode_tokens_per_s", "Encoding throughput", "tokens/s", "higher"),
    ):
        add(key, label, unit, speed["baseline"][key]["value"], speed["compressed"][key]["value"],
            speed["compressed"][key]["how"], better)
    how = (f"over {quality['windows']} held-out windows of {seq_len} tokens, embeddings of the "
           "original vs the compressed model")
    add("embedding_cosine_mean", "Embedding cosine similarity (mean)", "",
        1.0 if quality["windows"] else None, quality["cosine_mean"], how, "higher")
    add("embedding_cosine_min", "Embedding cosine similarity (min)", "",
        1.0 if quality["windows"] else None, quality["cosine_min"], how, "higher")
    add("embedding_max_abs_diff", "Largest embedding difference", "",
        0.0 if quality["windows"] else None, quality["max_abs_diff"], how)
    return rows


def quality_sentence(size: dict, rows: dict, quality: dict) -> str:
    """The quality loss of a compressed encoder, in one plain sentence."""
    parts = []
    if quality["cosine_mean"] is not None:
        parts.append(f"The compressed encoder's embeddings have a cosine similarity of "
                     f"{quality['cosine_mean']:.6f} on average (1 - cosine = "
                     f"{1 - quality['cosine_mean']:.2g}; lowest {quality['cosine_min']:.6f}) to "
                     f"the original's, largest absolute difference {quality['max_abs_diff']:.3g}")
    else:
        parts.append("Quality was not measured (infer.eval_tokens = 0)")
    mem_b, mem_c = size["baseline"]["model_bytes"], size["compressed"]["model_bytes"]
    parts.append(f"the weights take {mem_c / mem_b:.0%} of the original bytes in memory")
    speed = rows.get("encode_tokens_per_s")
    if speed and speed["ratio"] is not None:
        parts.append(f"encoding runs at {speed['ratio']:.2f}x the original's tokens/s")
    return "; ".join(parts) + "."
