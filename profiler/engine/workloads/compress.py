"""The compress workload: apply compression techniques to a copy of the model, then measure
original and compressed side by side — parameters, bytes in memory and on disk, latency,
tokens/s, perplexity, and the KL divergence of their next-token distributions — as one table.

Techniques that are not compression (the attention kernel) apply to both models, so the
comparison isolates what compression does. Both models are timed in the same run with their
generations interleaved (baseline x2, compressed x2, then compressed first, ...), so a slower or
busier moment of the machine hits both alike; every speed ratio carries its bootstrap interval
and judges it by the one verdict rule (profiler.figures.significance.paired_verdict: "within noise"
when that interval contains 1, "machine busy" on a shared machine). Quality is scored at the
latency batch size (infer.batch_size), and the figures say so. Encoder models are handed to
profiler/engine/workloads/encode.py.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from profiler.config import RunConfig
from profiler.engine.data import BatchSampler
from profiler.engine.workloads import encode
from profiler.engine.workloads.comparison import (
    causal_rows,
    causal_sentence,
    compress_copy,
    measure_sizes,
    ratio_figure,
)
from profiler.engine.workloads.generation import (
    GENERATION_SAMPLES,
    eval_windows,
    generate_once,
    latency_figures,
    per_run_samples,
    prompts_from,
    score,
    scoring,
    scoring_how,
    timed_loop,
)
from profiler.engine.workloads.setup import Emit, prepare
from profiler.engine.workloads.steps import brief_training
from profiler.figures import busy
from profiler.figures.stats import figure
from profiler.models import source as model_source
from profiler.wire import protocol
from techniques.compile import eager_how
from techniques.registry import INFER_STAGES
from techniques.runtime import TrainState

VARIANTS = ("baseline", "compressed")
PER_ROUND = 2
"""Timed generations of one model in a row within a round; rounds alternate which model goes
first (A A B B, B B A A, ...), so drift of the machine and the cost of switching models fall on
both alike."""


def finetune(state: TrainState, batches: BatchSampler, steps: int, lr: float, emit: Emit,
             control: Any) -> str:
    """A few AdamW steps on the pruned model; pruning masks keep pruned weights at zero."""
    params = [p for p in state.model.parameters() if p.requires_grad and p.is_floating_point()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses = brief_training(state, batches, steps, optimizer, emit, control, "finetune",
                            "loss_train")
    if not losses:
        return "no fine-tuning steps ran (stopped)"
    return (f"{len(losses)} AdamW steps at lr {lr:g}: train loss {losses[0]:.3f} -> "
            f"{losses[-1]:.3f}, pruned weights held at zero by their masks")


def run(config: RunConfig, emit: Emit, control: Any) -> dict:
    """Compress a copy of the model and compare it with the original; return the summary."""
    if model_source.model_kind(config.model) == "hf-encoder":
        return encode.run_compress(config, emit, control)  # embeddings compared, not perplexity
    cfg = config.infer
    prep = prepare(config, emit, control, stages=INFER_STAGES, apply=False, dropout=0.0,
                   train_mode=False)
    tune = None
    if config.compress.finetune_steps:
        batches = prep.batches(config.train.batch_size, config.train.seq_len)

        def tune(state: TrainState) -> str:
            return finetune(state, batches, config.compress.finetune_steps,
                            config.compress.finetune_learning_rate, emit, control)
    compressed = compress_copy(prep, tune, batch_size=cfg.batch_size, prompt_len=cfg.prompt_len,
                               gen_len=cfg.gen_len, repeats=cfg.repeats,
                               warmup_runs=cfg.warmup_runs)
    states = {"baseline": prep.state, "compressed": compressed}
    size = measure_sizes({name: state.model for name, state in states.items()})
    prompts = prompts_from(prep.corpus.val, cfg.batch_size, cfg.prompt_len, prep.device)
    started = time.perf_counter()
    try:
        runs, stopped, done = timed_loop(prep, states,
                                         lambda s: generate_once(s, prompts, cfg.gen_len),
                                         cfg.warmup_runs, cfg.repeats, per_round=PER_ROUND)
        quality = score([prep.state, compressed], [], cfg.batch_size)
        if cfg.eval_tokens and not stopped:
            windows = eval_windows(prep.corpus.val, cfg.eval_seq_len, cfg.eval_tokens)
            # Scored at the latency batch size: batch-dependent techniques (dynamic int8) are
            # judged in the batches they are timed in.
            quality = score([prep.state, compressed], windows, cfg.batch_size)
            emit(protocol.sample(done, time.perf_counter() - started, phase="eval", metrics={
                "perplexity": quality["perplexity"][1],
                "baseline_perplexity": quality["perplexity"][0],
                "kl_to_baseline": quality["kl"][1], "kl_p99": quality["kl_p99"][1],
                "top1_agreement": quality["top1_agreement"][1]}))
    finally:
        prep.stop_sampler()
    prep.finish(done, state=compressed, save=False)

    window = (f"over {len(runs['compressed'])} timed generations per model, interleaved "
              f"{PER_ROUND} per model per round in alternating order ({cfg.warmup_runs} warmup "
              f"rounds excluded), batch {cfg.batch_size}, prompt {cfg.prompt_len}, "
              f"{cfg.gen_len} new tokens{eager_how(prep.wanted, config.workload)}")
    speed = {name: latency_figures(runs[name], window=window) for name in VARIANTS}
    samples = {name: per_run_samples(runs[name], GENERATION_SAMPLES) for name in VARIANTS}
    shared = busy.sentence(prep.contention())  # no speed verdict on a busy machine
    rows = causal_rows(size, speed, quality, samples, list(prep.wanted), shared)
    by_key = rows.by_key()
    sentence = causal_sentence(size, by_key, quality, config.compress.finetune_steps,
                               list(prep.wanted))
    emit(protocol.info(sentence))
    figures = rows.figures(unpaired=("kl_to_baseline", "kl_p99", "top1_agreement"))
    ppl = quality["perplexity"]
    figures["perplexity_change_percent"] = figure(
        (ppl[1] / ppl[0] - 1) * 100 if ppl[0] and ppl[1] else None, "%",
        "(compressed / original perplexity - 1) x 100, "
        + (scoring_how(quality, list(prep.wanted)) if quality["tokens"] else "not measured"))
    figures["speedup_decode"] = ratio_figure(by_key["decode_tokens_per_s"],
                                             "compressed / original decode tokens/s")
    figures["peak_rss_bytes"] = figure(prep.sampler.peaks().get("rss_bytes"), "bytes",
                                       "highest worker RSS seen (both models held)")
    return {"workload": "compress", "stopped_early": stopped,
            "stop_reason": "stopped by request" if stopped else "all measurements done",
            "steps_completed": done, "measured_steps": len(runs["compressed"]),
            "device": str(prep.device), "parameters": size["baseline"]["parameters"],
            "model": prep.origin, "techniques": prep.applied, "comparison": rows.rows,
            "quality_loss": sentence, "figures": figures,
            "scoring": scoring(quality, list(prep.wanted)) if quality["tokens"] else None,
            **prep.contention()}
