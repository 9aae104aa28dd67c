"""Encoder models (BERT-style, sentence embedders) under the infer and compress workloads.

Not a workload of its own: infer.run and compress.run hand encoder models here. An encoder
generates nothing, so what is measured is one forward pass over a batch of held-out text
(infer.batch_size sequences of infer.prompt_len tokens): its latency (p50 / p90 / p99 over the
timed repeats after warmup), tokens/s and sequences/s. Compression is judged on the outputs:
the cosine similarity and the largest absolute difference between the original and the
compressed model's embeddings of the same held-out windows, instead of perplexity.
"""

from __future__ import annotations

from typing import Any

from profiler.config import RunConfig
from profiler.engine.workloads.comparison import (
    compress_copy,
    encoder_rows,
    encoder_sentence,
    measure_sizes,
)
from profiler.engine.workloads.generation import (
    ENCODER_SAMPLES,
    compare_embeddings,
    encode_figures,
    encode_once,
    eval_windows,
    model_figures,
    per_run_samples,
    prompts_from,
    timed_loop,
)
from profiler.engine.workloads.setup import Emit, prepare
from profiler.figures import busy
from profiler.figures.stats import figure
from profiler.wire import protocol
from techniques.registry import INFER_STAGES


def measures(cfg: Any) -> str:
    return (f"encoder model, no generation: each timed run is one forward pass over "
            f"{cfg.batch_size} sequences of {cfg.prompt_len} held-out tokens (latency of the "
            "pass; throughput = tokens or sequences / that time)")


def _started_fields(cfg: Any) -> dict:
    return {"measures": measures(cfg), "batch_size": cfg.batch_size,
            "prompt_len": cfg.prompt_len, "repeats": cfg.repeats, "warmup_runs": cfg.warmup_runs}


def run_infer(config: RunConfig, emit: Emit, control: Any) -> dict:
    cfg = config.infer
    prep = prepare(config, emit, control, stages=INFER_STAGES, dropout=0.0, train_mode=False)
    batch = prompts_from(prep.corpus.val, cfg.batch_size, cfg.prompt_len, prep.device)
    prep.started("infer", **_started_fields(cfg))
    emit(protocol.info(measures(cfg).capitalize(), step=0))
    try:
        runs, stopped, done = timed_loop(prep, {"model": prep.state},
                                         lambda s: encode_once(s, batch), cfg.warmup_runs,
                                         cfg.repeats)
    finally:
        prep.stop_sampler()
    prep.finish(done, save=False)
    measured = runs["model"]
    window = (f"over {len(measured)} timed passes ({cfg.warmup_runs} warmup excluded), batch "
              f"{cfg.batch_size} x {cfg.prompt_len} tokens")
    figures = encode_figures(measured, window)
    figures.update(model_figures(prep))
    figures.update({
        "perplexity": figure(None, "", "n/a: an encoder predicts no next token"),
    })
    return {"workload": "infer", "model_kind": "hf-encoder", "measures": measures(cfg),
            "stopped_early": stopped,
            "stop_reason": "stopped by request" if stopped else "all passes done",
            "steps_completed": done, "measured_steps": len(measured),
            "device": str(prep.device), "parameters": figures["parameters"]["value"], "model": prep.origin,
            "techniques": prep.applied, "figures": figures, **prep.contention()}


def run_compress(config: RunConfig, emit: Emit, control: Any) -> dict:
    cfg = config.infer
    prep = prepare(config, emit, control, stages=INFER_STAGES, apply=False, dropout=0.0,
                   train_mode=False)
    if config.compress.finetune_steps:
        prep.warn("compress.finetune_steps is ignored for an encoder model: it has no language "
                  "modelling head to fine-tune with")
    compressed = compress_copy(prep, **_started_fields(cfg))
    states = {"baseline": prep.state, "compressed": compressed}
    size = measure_sizes({name: state.model for name, state in states.items()})
    batch = prompts_from(prep.corpus.val, cfg.batch_size, cfg.prompt_len, prep.device)
    try:
        runs, stopped, done = timed_loop(prep, states, lambda s: encode_once(s, batch),
                                         cfg.warmup_runs, cfg.repeats)
        quality = {"cosine_mean": None, "cosine_min": None, "max_abs_diff": None, "windows": 0}
        if cfg.eval_tokens and not stopped:
            windows = eval_windows(prep.corpus.val, cfg.eval_seq_len, cfg.eval_tokens)
            quality = compare_embeddings(prep.state, compressed, windows)
            emit(protocol.sample(done, 0.0, phase="eval", metrics={
                "embedding_cosine_mean": quality["cosine_mean"],
                "embedding_max_abs_diff": quality["max_abs_diff"]}))
    finally:
        prep.stop_sampler()
    prep.finish(done, state=compressed, save=False)
    window = (f"over {len(runs['compressed'])} interleaved timed passes per model "
              f"({cfg.warmup_runs} warmup excluded), batch {cfg.batch_size} x {cfg.prompt_len}")
    speed = {name: encode_figures(runs[name], window) for name in states}
    samples = {name: per_run_samples(runs[name], ENCODER_SAMPLES) for name in states}
    shared = busy.sentence(prep.contention())  # no speed verdict on a busy machine
    rows = encoder_rows(size, speed, quality, cfg.eval_seq_len, samples, shared)
    sentence = encoder_sentence(size, rows.by_key(), quality)
    emit(protocol.info(sentence))
    figures = rows.figures(unpaired=("embedding_cosine_mean", "embedding_cosine_min",
                                     "embedding_max_abs_diff"))
    return {"workload": "compress", "model_kind": "hf-encoder", "measures": measures(cfg),
            "stopped_early": stopped,
            "stop_reason": "stopped by request" if stopped else "all measurements done",
            "steps_completed": done, "measured_steps": len(runs["compressed"]),
            "device": str(prep.device), "parameters": size["baseline"]["parameters"],
            "model": prep.origin, "techniques": prep.applied, "comparison": rows.rows,
            "quality_loss": sentence, "figures": figures, **prep.contention()}
