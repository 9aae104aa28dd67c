"""The infer workload: generation latency with a KV cache, and perplexity on held-out text.

One generation = a prefill (the whole prompt in one forward pass, filling the KV cache) and then
gen_len - 1 decode steps of one token per sequence, greedy. Warmup generations run first and are
left out; every timed segment is bracketed by a device synchronisation (profiler/engine/workloads/
generation.py). Encoder models are handed to profiler/engine/workloads/encode.py.
"""

from __future__ import annotations

import time
from typing import Any

from profiler.config import RunConfig
from profiler.engine.workloads import encode
from profiler.engine.workloads.generation import (
    eval_windows,
    generate_once,
    latency_figures,
    model_figures,
    perplexity_how,
    prompts_from,
    score,
    scoring,
    scoring_how,
    timed_loop,
)
from profiler.engine.workloads.setup import Emit, prepare
from profiler.figures.stats import figure
from profiler.models import source as model_source
from profiler.wire import protocol
from techniques.compile import eager_how
from techniques.registry import INFER_STAGES


def run(config: RunConfig, emit: Emit, control: Any) -> dict:
    """Generate repeatedly with the KV cache, then score perplexity; return the summary."""
    if model_source.model_kind(config.model) == "hf-encoder":
        return encode.run_infer(config, emit, control)  # no generation: timed forward passes
    cfg = config.infer
    prep = prepare(config, emit, control, stages=INFER_STAGES, dropout=0.0, train_mode=False)
    state = prep.state
    prompts = prompts_from(prep.corpus.val, cfg.batch_size, cfg.prompt_len, prep.device)
    prep.started("infer", batch_size=cfg.batch_size, prompt_len=cfg.prompt_len,
                 gen_len=cfg.gen_len, repeats=cfg.repeats, warmup_runs=cfg.warmup_runs)
    started = time.perf_counter()
    try:
        runs, stopped, done = timed_loop(prep, {"model": state},
                                         lambda s: generate_once(s, prompts, cfg.gen_len),
                                         cfg.warmup_runs, cfg.repeats)
        measured = runs["model"]
        quality = score([state], [], cfg.batch_size)
        if cfg.eval_tokens and not stopped:
            windows = eval_windows(prep.corpus.val, cfg.eval_seq_len, cfg.eval_tokens)
            quality = score([state], windows, cfg.batch_size)  # the latency batch size
            emit(protocol.sample(done, time.perf_counter() - started, phase="eval",
                                 metrics={"loss_val": quality["loss"][0],
                                          "perplexity": quality["perplexity"][0]}))
    finally:
        prep.stop_sampler()
    prep.finish(done, save=False)
    window = (f"over {len(measured)} timed generations ({cfg.warmup_runs} warmup excluded), "
              f"batch {cfg.batch_size}, prompt {cfg.prompt_len}, {cfg.gen_len} new tokens"
              f"{eager_how(prep.wanted, config.workload)}")
    figures = latency_figures(measured, window=window)
    how = scoring_how(quality, list(prep.wanted)) if quality["tokens"] else \
        "no tokens (infer.eval_tokens = 0)"
    figures.update(model_figures(prep))
    figures.update({
        "perplexity": figure(quality["perplexity"][0], "", perplexity_how(quality["loss"][0], how)),
        "loss_val": figure(quality["loss"][0], "nats/token", f"mean token cross-entropy over {how}"),
        "kv_cache_bytes": figure(measured[-1]["kv_cache_bytes"] if measured else None, "bytes",
                                 "keys and values of all layers for prompt + generation"),
    })
    return {"workload": "infer", "stopped_early": stopped,
            "stop_reason": "stopped by request" if stopped else "all generations done",
            "steps_completed": done, "measured_steps": len(measured), "device": str(prep.device),
            "parameters": figures["parameters"]["value"], "model": prep.origin,
            "techniques": prep.applied, "figures": figures,
            "scoring": scoring(quality, list(prep.wanted)) if quality["tokens"] else None,
            **prep.contention()}
