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

from profiler.engine.workloads.setup import Prepared, synchronize
from profiler.figures.stats import figure, percentile, timed_figure
from profiler.measure import sizes
from profiler.wire import protocol
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


def perplexity(loss: float | None) -> float | None:
    """exp(loss); None where it is beyond any float (a loss above ~709 nats/token: the
    perplexity is infinite, and `perplexity_how` says so beside the n/a)."""
    if loss is None or not math.isfinite(loss):
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return None


def perplexity_how(loss: float | None, how: str) -> str:
    """The `how` of a perplexity figure: its reason when it is n/a for an overflowing loss."""
    if loss is not None and perplexity(loss) is None:
        return (f"n/a: infinite (the loss is {loss:.4g} nats/token and exp of it is beyond any "
                f"float); exp(mean token cross-entropy) over {how}")
    return f"exp(mean token cross-entropy) over {how}"


@torch.no_grad()
def score(states: list[TrainState], windows: list[torch.Tensor], batch_size: int) -> dict:
    """Mean token cross-entropy of each model on the windows, scored `batch_size` windows per
    forward pass (state it: dynamic int8 quantizes activations with each batch's own range, so
    its logits depend on what shares the batch), and against the first model: KL(first‖each) of
    the next-token distributions as mean and 99th percentile over predicted tokens, and top-1
    agreement (share of positions where both models' most likely next token is the same)."""
    if batch_size < 1:
        raise ValueError(f"score batch_size = {batch_size}: score at least one window per pass")
    ce_sums = [0.0] * len(states)
    kls: list[list[torch.Tensor]] = [[] for _ in states]
    agree = [0] * len(states)
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
                continue
            kls[i].append((base_logp.exp() * (base_logp - logp)).sum(-1).flatten().cpu())
            agree[i] += int((base_logp.argmax(-1) == logp.argmax(-1)).sum())
        count += y.numel()
    out = {"batch_size": batch_size, "windows": len(windows),
           "seq_len": int(windows[0].numel() - 1) if windows else 0, "tokens": count}
    if not count:
        return {**out, "loss": [None] * len(states), "perplexity": [None] * len(states),
                "kl": [None] * len(states), "kl_p99": [None] * len(states),
                "top1_agreement": [None] * len(states)}
    losses = [s / count for s in ce_sums]
    per_token = [torch.cat(k).double() if k else None for k in kls]
    return {**out, "loss": losses, "perplexity": [perplexity(v) for v in losses],
            "kl": [0.0] + [float(k.mean()) for k in per_token[1:]],
            "kl_p99": [0.0] + [float(torch.quantile(k, 0.99)) for k in per_token[1:]],
            "top1_agreement": [1.0] + [a / count for a in agree[1:]]}


def scoring_how(quality: dict, techniques: list[str] | tuple[str, ...] = ()) -> str:
    """How a quality figure was scored: tokens, windows and how many share a forward pass, and
    for a technique whose outputs depend on that (metrics.batch_dependent: dynamic int8) that
    the figure holds for that number only."""
    text = (f"{quality['tokens']:,} held-out tokens in {quality['windows']} windows of "
            f"{quality['seq_len']}, scored {quality['batch_size']} window(s) per forward pass")
    note = batch_dependent(quality["batch_size"], techniques)
    return f"{text}; {note}" if note else text


def scoring(quality: dict, techniques: list[str] | tuple[str, ...] = ()) -> dict:
    """The scoring protocol a summary keeps beside its quality figures, so that comparisons
    can tell figures scored alike from figures that are not (profiler.figures.significance)."""
    from profiler.figures.metrics import BATCH_DEPENDENT

    return {"windows_per_pass": quality["batch_size"], "windows": quality["windows"],
            "seq_len": quality["seq_len"],
            "batch_dependent": [t for t in techniques if t in BATCH_DEPENDENT]}


def batch_dependent(windows_per_pass: int, techniques: list[str] | tuple[str, ...]) -> str:
    from profiler.figures.metrics import scoring_note

    return scoring_note(windows_per_pass, techniques)


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


GENERATION_SAMPLES = {
    "prefill_latency_p50_s": ("prefill_latency_s", "prefill latency of each generation"),
    "ttft_p50_s": ("ttft_s", "time to first token of each generation"),
    "decode_latency_p50_s": (None, "every decode step of every generation"),
    "decode_tokens_per_s": ("decode_tokens_per_s", "decode tokens/s of each generation"),
    "prefill_tokens_per_s": ("prefill_tokens_per_s", "prefill tokens/s of each generation"),
}
"""What a comparison of two models is computed from, keyed by the summary figure it stands for:
one value per timed generation, and for the decode step every step (the values that figure's
median is taken over, so a row's ratio is its two columns' ratio)."""

ENCODER_SAMPLES = {
    "encode_latency_p50_s": ("encode_latency_s", "latency of each pass"),
    "encode_tokens_per_s": ("encode_tokens_per_s", "tokens/s of each pass"),
    "encode_sequences_per_s": ("encode_sequences_per_s", "sequences/s of each pass"),
}


def per_run_samples(runs: list[dict], measures: dict) -> dict[str, list[float]]:
    """One value per timed run for each key of `measures` (GENERATION_SAMPLES, ENCODER_SAMPLES)."""
    out = {}
    for key, (field, _) in measures.items():
        if field is None:  # the decode step: all steps, as decode_latency_p50_s is taken
            values = [s for r in runs for s in r["_decode_steps_s"]]
        else:
            values = [r.get(field) for r in runs]
        out[key] = [v for v in values if v is not None]
    return out


def latency_figures(runs: list[dict], window: str = "") -> dict:
    """Latency of each generation phase (p50 as a timed figure with its distribution, p90 / p99
    beside it) and throughputs (the median over generations, with their distribution)."""
    out = {}
    steps = [s for r in runs for s in r["_decode_steps_s"]]
    for key, label, values in (
        ("prefill_latency_s", "prefill (prompt forward pass), one per generation",
         [r["prefill_latency_s"] for r in runs]),
        ("ttft_s", "time to first token (prefill + picking the token), one per generation",
         [r["ttft_s"] for r in runs]),
        ("decode_latency_s", "one decode step (one token per sequence, KV cache), all steps",
         steps),
    ):
        out.update(percentile_figures(key[:-2], values, label, window))
    samples = per_run_samples(runs, GENERATION_SAMPLES)
    out["decode_tokens_per_s"] = timed_figure(
        samples["decode_tokens_per_s"], "tokens/s",
        f"median over generations of generated tokens / decode time {window}")
    out["prefill_tokens_per_s"] = timed_figure(
        samples["prefill_tokens_per_s"], "tokens/s",
        f"median over generations of prompt tokens / prefill time {window}")
    return out


def percentile_figures(stem: str, values: list[float], label: str, window: str) -> dict:
    """STEM_p50_s as a timed figure (with its distribution), STEM_p90_s / STEM_p99_s beside it."""
    out = {f"{stem}_p50_s": timed_figure(values, "s", f"median of {label} {window}")}
    for q in (90, 99):
        out[f"{stem}_p{q}_s"] = figure(percentile(values, q), "s",
                                       f"{q}th percentile of {label} {window}")
    return out


def encode_figures(runs: list[dict], window: str) -> dict:
    """One encoder pass: p50 as a timed figure, p90 / p99 beside it; tokens / sequences per
    second as the median over passes with their distribution."""
    out = percentile_figures("encode_latency", [r["encode_latency_s"] for r in runs],
                             "one forward pass", window)
    samples = per_run_samples(runs, ENCODER_SAMPLES)
    out["encode_tokens_per_s"] = timed_figure(
        samples["encode_tokens_per_s"], "tokens/s",
        f"median over passes of tokens encoded / pass time {window}")
    out["encode_sequences_per_s"] = timed_figure(
        samples["encode_sequences_per_s"], "sequences/s",
        f"median over passes of sequences / pass time {window}")
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
               repeats: int, per_round: int = 1) -> tuple[dict[str, list[dict]], bool, int]:
    """`warmup` untimed rounds (each state once), then timed rounds until every state has
    `repeats` measurements: each round measures every state `per_round` times in a row, the
    order of the states alternating round by round (A A B B, B B A A, ...), so a slower moment
    of the machine and the cost of switching models hit all alike. One sample per measurement
    index (keys prefixed with the state's name when there are several, system readings beside).
    Returns (measured results per state, stopped early, samples sent)."""
    if per_round < 1:
        raise ValueError(f"per_round = {per_round}: measure each state at least once a round")
    runs: dict[str, list[dict]] = {name: [] for name in states}
    started = time.perf_counter()
    names = list(states)
    done = 0
    plan = [("warmup", 1)] * warmup
    left = repeats
    while left > 0:
        plan.append(("measure", min(per_round, left)))
        left -= per_round
    for round_index, (phase, count) in enumerate(plan):
        prep.control.poll()
        if prep.control.should_stop:
            return runs, True, done
        if phase == "measure" and round_index == warmup and warmup:
            prep.emit(protocol.phase(
                f"warmup over: measurements {done + 1}+ count in the summary", step=done + 1))
        results: dict[str, list[dict]] = {}
        for name in (names if round_index % 2 == 0 else names[::-1]):
            results[name] = [measure(states[name]) for _ in range(count)]
            if phase == "measure":
                runs[name] += results[name]
        for index in range(count):
            metrics: dict[str, Any] = {}
            for name in names:
                prefix = f"{name}_" if len(states) > 1 else ""
                metrics.update({prefix + k: v for k, v in results[name][index].items()
                                if not k.startswith("_")})
            done += 1
            prep.emit(protocol.sample(done, time.perf_counter() - started, phase=phase,
                                      metrics={**metrics, **prep.sampler.latest()}))
    return runs, False, done
