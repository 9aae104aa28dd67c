"""The infer workload: generation latency with a KV cache, and perplexity on held-out text.

One generation = a prefill (the whole prompt in one forward pass, filling the KV cache) and then
gen_len - 1 decode steps of one token per sequence, greedy. Warmup generations run first and are
left out; every timed segment is bracketed by a device synchronisation. The measuring functions
here are shared with the compress workload and `effiscope bench compress`.
"""

from __future__ import annotations

import math
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
from profiler.workloads.train import resolve_device, synchronize
from techniques import registry, runtime

Emit = Callable[[dict], None]

# Compression order, and why: pruning ranks float weights, fine-tuning needs trainable float
# weights, masks are folded in before any format change, a cast precedes weight-only
# quantization (int4 wants bf16), and int8 dynamic replaces the Linear modules last.
PRUNE_ORDER = ("prune_structured", "prune_magnitude", "prune_semi_structured")
FORMAT_ORDER = ("weight_cast", "quantize_weight_only", "quantize_int8_dynamic")
INFER_STAGES = ("compress", "model")


# --- model preparation ----------------------------------------------------------------------------
def inference_techniques(config: RunConfig, caps: dict, warn: Callable[[str], None]) -> dict:
    """The enabled techniques that apply to a model at inference, checked before any work."""
    wanted = {}
    for name, params in config.techniques.items():
        info = registry.get(name)
        if info.stage not in INFER_STAGES:
            warn(f"techniques.{name} acts on training and is ignored by the {config.workload} "
                 "workload")
            continue
        wanted[name] = registry.validate_params(name, params)
    for name, params in wanted.items():
        info = registry.get(name)
        why = registry.unavailable_reason(info, params, caps)
        if why:
            raise runtime.Unsupported(f"techniques.{name}: {why}")
        for other in info.conflicts:
            if other in wanted:
                raise runtime.Unsupported(f"techniques.{name} and techniques.{other} cannot be "
                                          "combined; enable only one of them")
    return wanted


def apply_compression(state: runtime.TrainState, wanted: dict,
                      finetune: Callable[[], str] | None = None) -> list[dict]:
    """Apply techniques in the documented order; fine-tune between pruning and folding the masks.

    Returns what each step did, as {name, label, params, report}.
    """
    def rank(name: str) -> tuple:
        if name in PRUNE_ORDER:
            return (0, PRUNE_ORDER.index(name))
        if name in FORMAT_ORDER:
            return (2, FORMAT_ORDER.index(name))
        return (1 if registry.get(name).stage == "compress" else 3, name)

    applied = []
    convert = getattr(state.model, "convert_conv1d", None)  # HF GPT-2: Conv1D -> nn.Linear
    if wanted and convert is not None and (count := convert()):
        applied.append({"name": "conv1d_to_linear", "label": "GPT-2 Conv1D as nn.Linear",
                        "params": {}, "report": f"{count} Conv1D layers of the blocks replaced "
                        "by nn.Linear with the transposed weight (the same math), so the "
                        "techniques below can act on them"})
    order = sorted(wanted, key=rank)
    pruners = [n for n in order if rank(n)[0] == 0]
    for name in order:
        if name in FORMAT_ORDER or rank(name)[0] == 3:
            if pruners:  # first format change: fine-tune the pruned model, then fold the masks
                applied += _finish_pruning(state, wanted, pruners, finetune)
                pruners = []
        info = registry.get(name)
        report = runtime.implementation(name).apply(state, wanted[name])
        state.active[name] = wanted[name]
        applied.append({"name": name, "label": info.label, "params": wanted[name],
                        "report": report})
    if pruners:
        applied += _finish_pruning(state, wanted, pruners, finetune)
    return applied


def _finish_pruning(state, wanted: dict, pruners: list[str], finetune) -> list[dict]:
    done = []
    if finetune is not None:
        done.append({"name": "finetune", "label": "Fine-tuning after pruning", "params": {},
                     "report": finetune()})
    for name in pruners:
        module = runtime.implementation(name)
        if hasattr(module, "finalize"):
            done.append({"name": name, "label": registry.get(name).label, "params": wanted[name],
                         "report": module.finalize(state, wanted[name])})
    return done


# --- measuring ------------------------------------------------------------------------------------
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
def generate_once(model, prompts: torch.Tensor, gen_len: int, device: torch.device) -> dict:
    """One timed greedy generation: prefill, first token, then decode steps with the KV cache."""
    batch, prompt_len = prompts.shape
    cache = model.new_kv_cache(prompt_len + gen_len)
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
def score(models: list, windows: list[torch.Tensor], device, batch_size: int = 8) -> dict:
    """Mean token cross-entropy of each model on the windows, and KL(first‖each other) of their
    next-token distributions, averaged over every predicted token."""
    ce_sums = [0.0] * len(models)
    kl_sums = [0.0] * len(models)
    count = 0
    for start in range(0, len(windows), batch_size):
        batch = torch.stack(windows[start:start + batch_size]).to(device)
        x, y = batch[:, :-1], batch[:, 1:]
        base_logp = None
        for i, model in enumerate(models):
            logits, _ = model(x)
            logp = F.log_softmax(logits.float(), dim=-1)
            ce_sums[i] += float(F.nll_loss(logp.flatten(0, 1), y.reshape(-1), reduction="sum"))
            if base_logp is None:
                base_logp = logp
            else:
                kl = (base_logp.exp() * (base_logp - logp)).sum(-1)
                kl_sums[i] += float(kl.sum())
        count += y.numel()
    if not count:
        return {"loss": [None] * len(models), "perplexity": [None] * len(models),
                "kl": [None] * len(models), "tokens": 0}
    losses = [s / count for s in ce_sums]
    return {"loss": losses, "perplexity": [math.exp(v) for v in losses],
            "kl": [None] + [s / count for s in kl_sums[1:]], "tokens": count}


def latency_figures(runs: list[dict], prefix: str = "", window: str = "") -> dict:
    """p50 / p90 / p99 of each latency over the measured runs, and mean decode throughput."""
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
            out[f"{prefix}{key[:-2]}_p{q}_s"] = figure(
                percentile(values, q), "s", f"{q}th percentile of {label} {window}")
    total_tokens = sum(r["_decode_tokens"] for r in runs)
    total_s = sum(sum(r["_decode_steps_s"]) for r in runs)
    out[f"{prefix}decode_tokens_per_s"] = figure(
        total_tokens / total_s if total_s > 0 else None, "tokens/s",
        f"generated tokens / summed decode-step time {window}")
    out[f"{prefix}prefill_tokens_per_s"] = figure(
        percentile([r["prefill_tokens_per_s"] for r in runs], 50), "tokens/s",
        f"prompt tokens / prefill time, median {window}")
    return out


# --- the workload ---------------------------------------------------------------------------------
def run(config: RunConfig, emit: Emit, control: Any) -> dict:
    """Generate repeatedly with the KV cache, then score perplexity; return the summary."""
    if checkpoints.model_kind(config.model) == "hf-encoder":
        from profiler.workloads import encode

        return encode.run_infer(config, emit, control)  # no generation: timed forward passes
    cfg = config.infer
    device = resolve_device(config.device)
    caps = {**detect(device), **checkpoints.model_caps(config.model)}

    def warn(text: str) -> None:
        emit({"type": "event", "kind": "warning", "message": text})

    wanted = inference_techniques(config, caps, warn)
    torch.manual_seed(config.seed)
    setup_started = time.perf_counter()
    model, origin = checkpoints.load_model(config.model, device, dropout=0.0)
    model.eval()
    state = runtime.TrainState(config=config, device=device, caps=caps, model=model, warn=warn)
    applied = apply_compression(state, wanted)
    model = state.model
    shape = model.shape
    corpus = load_corpus(config.data.source, config.data.path, config.data.max_train_bytes,
                         config.data.val_fraction, shape.vocab_size, config.seed,
                         tokenizer=getattr(model, "tokenizer", None))
    prompts = prompts_from(corpus.val, cfg.batch_size, cfg.prompt_len, device)
    params, nonzero = checkpoints.parameter_counts(model)
    sampler = SystemSampler(period_s=0.2, gpu_index=(device.index or 0) if device.type == "cuda"
                            else None).start()
    emit({"type": "started", "run": {
        "workload": "infer", "device": str(device),
        "model": {"preset": checkpoints.model_name(config.model), "origin": origin,
                  "parameters": params, **shape.as_dict()},
        "data": corpus.description, "batch_size": cfg.batch_size, "prompt_len": cfg.prompt_len,
        "gen_len": cfg.gen_len, "repeats": cfg.repeats, "warmup_runs": cfg.warmup_runs,
        "techniques": applied, "capabilities": caps,
        "setup_time_s": time.perf_counter() - setup_started,
    }})
    for item in applied:
        emit({"type": "event", "kind": "info", "step": 0, "technique": item["name"],
              "message": f"{item['label']}: {item['report']}"})

    run_started = time.perf_counter()
    measured: list[dict] = []
    stopped_early = False
    done = 0
    total = cfg.warmup_runs + cfg.repeats
    try:
        for index in range(1, total + 1):
            control.poll()
            if control.should_stop:
                stopped_early = True
                break
            warm = index <= cfg.warmup_runs
            if index == cfg.warmup_runs + 1 and cfg.warmup_runs:
                emit({"type": "event", "kind": "phase", "step": index,
                      "message": f"warmup over: generations {index}+ count in the summary"})
            with state.step_context():  # the attention technique's SDPA backend, if any
                result = generate_once(model, prompts, cfg.gen_len, device)
            done = index
            if not warm:
                measured.append(result)
            metrics = {k: v for k, v in result.items() if not k.startswith("_")}
            emit({"type": "sample", "step": index, "time": time.perf_counter() - run_started,
                  "phase": "warmup" if warm else "measure",
                  "metrics": {**metrics, **sampler.latest()}})
        quality = {"loss": [None], "perplexity": [None], "tokens": 0}
        if cfg.eval_tokens and not stopped_early:
            windows = eval_windows(corpus.val, cfg.eval_seq_len, cfg.eval_tokens)
            quality = score([model], windows, device)
            emit({"type": "sample", "step": total, "time": time.perf_counter() - run_started,
                  "phase": "eval", "metrics": {"loss_val": quality["loss"][0],
                                               "perplexity": quality["perplexity"][0]}})
    finally:
        sampler.read_now()
        sampler.stop()

    window = (f"over {len(measured)} timed generations ({cfg.warmup_runs} warmup excluded), "
              f"batch {cfg.batch_size}, prompt {cfg.prompt_len}, {cfg.gen_len} new tokens")
    figures = latency_figures(measured, window=window)
    figures.update({
        "perplexity": figure(quality["perplexity"][0], "", f"exp(mean token cross-entropy) over "
                             f"{quality['tokens']:,} held-out tokens in windows of "
                             f"{cfg.eval_seq_len}"),
        "loss_val": figure(quality["loss"][0], "nats/token", "mean token cross-entropy, same text"),
        "kv_cache_bytes": figure(measured[-1]["kv_cache_bytes"] if measured else None, "bytes",
                                 "keys and values of all layers for prompt + generation"),
        "parameters": figure(params, "", "parameters of the model as run"),
        "nonzero_parameters": figure(nonzero, "", "parameters that are not exactly zero"),
        "model_bytes": figure(checkpoints.model_bytes(model), "bytes",
                              "bytes of the weights in memory"),
        "peak_rss_bytes": figure(sampler.peaks().get("rss_bytes"), "bytes",
                                 "highest worker RSS seen"),
    })
    return {"workload": "infer", "stopped_early": stopped_early,
            "stop_reason": "stopped by request" if stopped_early else "all generations done",
            "steps_completed": done,
            "measured_steps": len(measured), "device": str(device), "parameters": params,
            "model": origin, "techniques": applied, "figures": figures}
