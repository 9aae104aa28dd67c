"""Measuring a model that runs forward only: prompts and evaluation windows from held-out text,
one timed generation (prefill + KV-cache decode) or one timed encoder pass, perplexity / KL
scoring, latency percentiles, and the interleaved timed loop that infer, compress and the encoder
runs share.

Every measured forward pass runs inside the engine's step context (autocast, the SDPA backend the
attention technique chose) of the state it measures, and every timed segment is bracketed by a
device synchronisation.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from profiler import sizes
from profiler.stats import figure, percentile
from profiler.workloads.setup import Prepared, synchronize
from techniques.runtime import TrainState


def prompts_from(tokens: torch.Tensor, batch_size: int, prompt_len: int, device) -> torch.Tensor:
    """batch_size prompts of real held-out text, evenly spaced through it (the same every run)."""
    span = tokens.numel() - prompt_len - 1
    if span <= 0:
        raise ValueError(f"the held-out text has {tokens.numel()} tokens, fewer than one prompt "
                         f"of {prompt_len}; lower infer.prompt_len or give more text")
    starts = [span * i // max(batch_size, 1) for i in range(batch_size)]
    return torch.stack([tokens[s:s + prompt_len].long() for s in starts]).to(device)


def eval_windows(tokens: torch.Tensor, seq_len: int, max_tokens: int) -> list[torch.Tensor]:
    """Contiguous, non-overlapping windows of seq_len + 1 tokens covering up to max_tokens
    predicted tokens from the start of the held-out text."""
    count = min(max_tokens // seq_len, (tokens.numel() - 1) // seq_len)
    return [tokens[i * seq_len:(i + 1) * seq_len + 1].long() for i in range(count)]


@torch.no_grad()
def generate_once(state: TrainState, prompts: torch.Tensor, gen_len: int) -> dict:
    """One timed greedy generation: prefill, first token, then decode steps with the KV cache."""
    model, device = state.model, state.device
    batch, prompt_len = prompts.shape
    cache = model.new_kv_cache(prompt_len + gen_len)
    with state.step_context():
        synchronize(device)
        started = time.perf_counter()
        logits, _ = model(prompts, kv_cache=cache)
        synchronize(device)
        prefill_s = time.perf_counter() - started
        token = logits[:, -1].argmax(dim=-1, keepdim=True)
        synchronize(device)
        ttft_s = time.perf_counter() - started
        steps: list[float] = []
        for _ in range(gen_len - 1):
            step_started = time.perf_counter()
            logits, _ = model(token, kv_cache=cache)
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            synchronize(device)
            steps.append(time.perf_counter() - step_started)
    decode_s = sum(steps)
    return {
        "prefill_latency_s": prefill_s,
        "ttft_s": ttft_s,
        "decode_latency_s": decode_s / len(steps) if steps else None,
        "decode_tokens_per_s": batch * len(steps) / decode_s if decode_s > 0 else None,
        "prefill_tokens_per_s": batch * prompt_len / prefill_s if prefill_s > 0 else None,
        "kv_cache_bytes": cache.nbytes(),
        "_decode_steps_s": steps,
        "_decode_tokens": batch * len(steps),
    }


@torch.no_grad()
def encode_once(state: TrainState, batch: torch.Tensor) -> dict:
    """One timed forward pass of an encoder over the batch."""
    with state.step_context():
        synchronize(state.device)
        started = time.perf_counter()
        state.model(batch)
        synchronize(state.device)
        seconds = time.perf_counter() - started
    return {"encode_latency_s": seconds,
            "encode_tokens_per_s": batch.numel() / seconds if seconds > 0 else None,
            "encode_sequences_per_s": batch.size(0) / seconds if seconds > 0 else None}


@torch.no_grad()
def score(states: list[TrainState], windows: list[torch.Tensor], batch_size: int = 8) -> dict:
    """Mean token cross-entropy of each model on the windows, and KL(first‖each other) of their
    next-token distributions, averaged over every predicted token."""
    ce_sums = [0.0] * len(states)
    kl_sums = [0.0] * len(states)
    count = 0
    for start in range(0, len(windows), batch_size):
        batch = torch.stack(windows[start:start + batch_size]).to(states[0].device)
        x, y = batch[:, :-1], batch[:, 1:]
        base_logp = None
        for i, state in enumerate(states):
            with state.step_context():
                logits, _ = state.model(x)
            logp = F.log_softmax(logits.float(), dim=-1)
            ce_sums[i] += float(F.nll_loss(logp.flatten(0, 1), y.reshape(-1), reduction="sum"))
            if base_logp is None:
                base_logp = logp
            else:
                kl = (base_logp.exp() * (base_logp - logp)).sum(-1)
                kl_sums[i] += float(kl.sum())
        count += y.numel()
    if not count:
        return {"loss": [None] * len(states), "perplexity": [None] * len(states),
                "kl": [None] * len(states), "tokens": 0}
    losses = [s / count for s in ce_sums]
    return {"loss": losses, "perplexity": [math.exp(v) for v in losses],
            "kl": [None] + [s / count for s in kl_sums[1:]], "tokens": count}


@torch.no_grad()
def compare_embeddings(baseline: TrainState, compressed: TrainState, windows: list[torch.Tensor],
                       batch_size: int = 8) -> dict:
    """Cosine similarity (mean, min) and the largest absolute difference of two encoders'
    embeddings of the same windows."""
    cosines: list[float] = []
    max_diff = 0.0
    for start in range(0, len(windows), batch_size):
        batch = torch.stack(windows[start:start + batch_size])[:, :-1].to(baseline.device)
        outputs = []
        for state in (baseline, compressed):
            with state.step_context():
                outputs.append(state.model(batch).float())
        a, b = outputs
        cosines += F.cosine_similarity(a, b, dim=-1).tolist()
        max_diff = max(max_diff, float((a - b).abs().max()))
    if not cosines:
        return {"cosine_mean": None, "cosine_min": None, "max_abs_diff": None, "windows": 0}
    return {"cosine_mean": sum(cosines) / len(cosines), "cosine_min": min(cosines),
            "max_abs_diff": max_diff, "windows": len(cosines)}


def latency_figures(runs: list[dict], window: str = "") -> dict:
    """p50 / p90 / p99 of each generation latency over the measured runs, and throughputs."""
    out = {}
    steps = [s for r in runs for s in r["_decode_steps_s"]]
    for key, label, values in (
        ("prefill_latency_s", "prefill (prompt forward pass)",
         [r["prefill_latency_s"] for r in runs]),
        ("ttft_s", "time to first token (prefill + picking the token)",
         [r["ttft_s"] for r in runs]),
        ("decode_latency_s", "one decode step (one token per sequence, KV cache), all steps",
         steps),
    ):
        for q in (50, 90, 99):
            out[f"{key[:-2]}_p{q}_s"] = figure(
                percentile(values, q), "s", f"{q}th percentile of {label} {window}")
    total_tokens = sum(r["_decode_tokens"] for r in runs)
    total_s = sum(sum(r["_decode_steps_s"]) for r in runs)
    out["decode_tokens_per_s"] = figure(
        total_tokens / total_s if total_s > 0 else None, "tokens/s",
        f"generated tokens / summed decode-step time {window}")
    out["prefill_tokens_per_s"] = figure(
        percentile([r["prefill_tokens_per_s"] for r in runs], 50), "tokens/s",
        f"prompt tokens / prefill time, median {window}")
    return out


def encode_figures(runs: list[dict], window: str) -> dict:
    """p50 / p90 / p99 of one encoder pass, and tokens / sequences per second."""
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


def model_figures(prep: Prepared) -> dict:
    """Size and memory figures of the model as run: parameters, non-zero parameters, bytes of
    the weights, the worker's peak RSS."""
    params, nonzero = sizes.parameter_counts(prep.model)
    return {
        "parameters": figure(params, "", "parameters of the model as run"),
        "nonzero_parameters": figure(nonzero, "", "parameters that are not exactly zero"),
        "model_bytes": figure(sizes.model_bytes(prep.model), "bytes",
                              "bytes of the weights in memory"),
        "peak_rss_bytes": figure(prep.sampler.peaks().get("rss_bytes"), "bytes",
                                 "highest worker RSS seen"),
    }


def timed_loop(prep: Prepared, states: dict[str, TrainState], measure, warmup: int,
               repeats: int) -> tuple[dict[str, list[dict]], bool, int]:
    """`warmup` untimed then `repeats` timed rounds; each round measures every state once, the
    order alternating, so a slower moment of the machine hits all alike. One sample per round
    (keys prefixed with the state's name when there are several, system readings beside them).
    Returns (measured results per state, stopped early, rounds done)."""
    runs: dict[str, list[dict]] = {name: [] for name in states}
    started = time.perf_counter()
    names = list(states)
    done = 0
    for index in range(1, warmup + repeats + 1):
        prep.control.poll()
        if prep.control.should_stop:
            return runs, True, done
        warm = index <= warmup
        if index == warmup + 1 and warmup:
            prep.emit({"type": "event", "kind": "phase", "step": index,
                       "message": f"warmup over: rounds {index}+ count in the summary"})
        metrics: dict[str, Any] = {}
        for name in (names if index % 2 else names[::-1]):
            result = measure(states[name])
            if not warm:
                runs[name].append(result)
            prefix = f"{name}_" if len(states) > 1 else ""
            metrics.update({prefix + k: v for k, v in result.items() if not k.startswith("_")})
        done = index
        prep.emit({"type": "sample", "step": index, "time": time.perf_counter() - started,
                   "phase": "warmup" if warm else "measure",
                   "metrics": {**metrics, **prep.sampler.latest()}})
    return runs, False, done
