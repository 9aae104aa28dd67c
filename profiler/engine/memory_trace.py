"""Will it fit: the memory a run needs, from its real model and techniques traced under fake
tensors with PyTorch's own memory tracker (imports torch).

The model a config names is built on the meta device without reading a weight (a Hugging Face
folder from its config.json, a GGUF file from its header, the built-in GPT from its shape, a
past run's from its stored shape). With LoRA (or another model-stage technique) the techniques
that reshape it (compression, LoRA, attention, checkpointing) are applied there through the
one engine (techniques/runtime.py), and FSDP shards it; then every tensor becomes a fake one
(FakeTensorMode: shapes, dtypes and storages, no memory), the rest of the techniques apply
(without LoRA all of them, in the engine's order: pruning and quantization read thresholds
from the weights, which the meta device cannot give; optimizer, precision, accumulation,
clipping) and one real step runs: the train workload's own
step (steps.accumulated_step), or the infer workload's prefill and a decode step with the KV
cache. `torch.distributed._tools.mem_tracker.MemTracker` (FSDPMemTracker under FSDP, over a fake
process group) sorts every storage into parameters, buffers, gradients, activations,
temporaries and optimizer states; this module keeps the peak of each phase with its parts.

Why meta first: peft cannot inject adapters into a model whose weights are already fake (its
`.to()` swaps tensors, which a fake tensor refuses), and FSDP's device mesh cannot be built under
fake tensors. Steady state: the traced step is a first step, whose optimizer states appear at
its optimizer step; from the second step on they are there throughout, so their bytes are added
to the forward and backward peaks (exact: the states' size never changes). Accumulation traces
two micro-batches (the second backward adds to gradients that exist). A number read from a
tensor (an optimizer's step count, the gradient norm, a pruning threshold) is 1 under the
trace, a truth value True (memory_tools.OneReads), and fp16's loss
scaler is its disabled null object (its checks work in place on the gradients: no memory).

What no trace can see is said in `notes`: torch.compile is left out (the eager model runs), the
CUDA allocator's caching, the CUDA context and NCCL's buffers are the margin band of
profiler.figures.memory_fit, never folded into these bytes. What it cannot run (QLoRA's and
torchao's GPU-only kernels, int8 dynamic quantization's observers) raises Untraceable with the
sentence; torchao's low-bit optimizer (a compiled step) is traced as fp32 AdamW with its states
put at their predicted low-bit size, said in the notes.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import torch

from profiler.engine import memory_tools as tools
from profiler.engine import weights
from profiler.engine.memory_tools import Untraceable
from profiler.errors import Unsupported
from profiler.figures.memory_fit import SCHEMA
from profiler.models import source as model_source
from techniques import registry, runtime

META_STAGES = ("compress", "model", "checkpoint")
"""Stages applied on the meta device, before the tensors become fake, when a technique of the
model stage (LoRA's adapters: see the module doc) is on; without one every stage applies to the
fake model in its order (a pruning threshold or a quantization scale is read from the weights,
which a meta tensor cannot give)."""
LEFT_OUT = {
    "compile": "torch.compile is left out: the trace runs the eager model (compiled kernels "
               "fuse ops and usually hold less, never more)",
    "tf32": "tf32 changes matmul precision, not memory",
}
REFUSED = {
    "qlora": "its 4-bit NF4 weights are bitsandbytes kernels that run on a real CUDA GPU only",
    "float8_training": "torchao's float8 matmuls run on a real CUDA GPU only",
    "quantize_weight_only": "torchao's int4 / int8 weight-only kernels run on a real CUDA GPU "
                            "only",
    "prune_semi_structured": "its 2:4 sparse kernels run on a real CUDA GPU only",
}


def _refusal(what: str, exc: BaseException) -> Untraceable:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
    return Untraceable(f"{what} cannot be traced under fake tensors ({type(exc).__name__}: "
                       f"{first}); the estimate cannot include it: switch it off to estimate "
                       "the rest, or measure a short run")


def _plan(config: Any, stages: tuple[str, ...], notes: list[str]) -> dict:
    """The techniques the trace applies (defaults filled), the ones it leaves out said in
    notes; a technique it cannot run refused with the reason."""
    wanted = {}
    for name, params in runtime.enabled_techniques(config).items():
        info = registry.get(name)
        if info.stage not in stages:
            continue
        if name in REFUSED:
            raise Untraceable(f"techniques.{name} cannot be traced under fake tensors: "
                              f"{REFUSED[name]}; switch it off to estimate the rest, or "
                              "measure a short run on the GPU")
        if name in LEFT_OUT:
            notes.append(LEFT_OUT[name])
            continue
        wanted[name] = params
    return wanted


def _optimizer_kernel(wanted: dict, target: str, notes: list[str]) -> None:
    """`implementation = auto` made definite: fused on CUDA (what a run there picks), foreach on
    a CPU (a run there times both; foreach holds more at its step, so the estimate is the safe
    one)."""
    params = wanted.get("optimizer")
    if params is None or params.implementation != "auto":
        return
    if params.algorithm == "sgd" and params.momentum == 0:
        return
    kernel = "fused" if target == "cuda" else "foreach"
    wanted["optimizer"] = params.replace(implementation=kernel)
    if target != "cuda":
        notes.append("optimizer implementation auto: a CPU run times foreach against fused and "
                     "keeps the faster; traced as foreach, which holds more at its step")


def _apply(state: runtime.TrainState, wanted: dict, names: list[str]) -> None:
    for name in names:
        try:
            runtime.apply_all(state, {name: wanted[name]},
                              keep_masks=state.config.workload == "train")  # as the run does
        except Unsupported:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure becomes one sentence
            raise _refusal(f"techniques.{name}", exc) from None


def _prepared(config: Any, target: str, world: int, notes: list[str]
              ) -> tuple[runtime.TrainState, dict, contextlib.ExitStack, bool]:
    """The model as the run would have it, fake, with its techniques: (state, techniques,
    the contexts to leave afterwards, whether FSDP shards it)."""
    training = config.workload == "train"
    stages = registry.STAGES if training else registry.INFER_STAGES
    wanted = _plan(config, stages, notes)
    _optimizer_kernel(wanted, target, notes)
    sharded = wanted.pop("fsdp", None)
    low_bit = wanted.pop("optimizer_low_bit", None)
    ddp = wanted.pop("ddp", None)
    if ddp is not None:
        notes.append(_ddp_note(ddp))
    dropout = config.model.dropout if training else 0.0
    try:
        with torch.device("meta"):
            model = weights.build_skeleton(config.model, dropout)
    except Unsupported:
        raise
    except Exception as exc:  # noqa: BLE001 - a model transformers cannot build from its config
        raise _refusal(f"the model ({model_source.model_label(config.model)})", exc) from None
    model.train(training)
    caps = {**model_source.model_caps(config.model), "world_size": world,
            "cuda": target == "cuda", "fused": ["adamw", "adam", "sgd"]}
    def warn(text: str) -> None:
        if "measured" not in text:  # a technique's timing ran on fake tensors: meaningless
            notes.append(text)

    state = runtime.TrainState(config=config, device=torch.device("cpu"), caps=caps,
                               model=model, warn=warn)
    order = sorted((registry.get(n) for n in wanted), key=runtime.order_key)
    state.device = torch.device("meta")
    on_meta = META_STAGES if any(i.stage == "model" for i in order) else ()
    _apply(state, wanted, [i.name for i in order if i.stage in on_meta])
    stack = contextlib.ExitStack()
    try:
        if sharded is not None:
            stack.enter_context(tools.FakeProcessGroup(world))
            _apply(state, {"fsdp": sharded}, ["fsdp"])
            stack.enter_context(tools.fake_mode())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.to_empty(device="cpu")  # FSDP's shards become fake, ties and all
        else:
            stack.enter_context(tools.fake_mode())
            tools.fake_from_meta(model, "cpu")
        state.device = torch.device("cpu")
        with tools.OneReads():  # a threshold read from a fake weight (pruning, scales) is 1
            _apply(state, wanted, [i.name for i in order if i.stage not in on_meta])
    except BaseException:
        stack.close()  # the fake mode and process group end with the failure
        raise
    if sharded is not None:
        wanted["fsdp"] = sharded
    if low_bit is not None:
        wanted["optimizer_low_bit"] = low_bit
    return state, wanted, stack, sharded is not None


def _ddp_note(params: Any) -> str:
    if params.gradient_as_bucket_view:
        return ("DDP: gradients live in its buckets (gradient_as_bucket_view), allocated once "
                "and kept through forward: counted from the forward on")
    return ("DDP without gradient_as_bucket_view keeps a second copy of every gradient in its "
            "buckets: counted from the forward on")


# --- the traces -------------------------------------------------------------------------------
def _train(state: runtime.TrainState, sharded: bool, batch: int, seq: int,
           notes: list[str], ddp: Any) -> dict:
    from profiler.engine.workloads import steps

    model = state.model
    state.scaler = runtime.make_scaler(state.device, enabled=False)  # see the module doc
    micro = state.micro_batches
    traced_micro = min(micro, 2)
    state.micro_batches = traced_micro
    x = torch.zeros(batch, seq, dtype=torch.long)
    y = torch.zeros(batch, seq, dtype=torch.long)
    tracker = tools.tracker(sharded, model, state.optimizer, x, y)
    saved: dict[str, int] = {}
    forward = steps.lm_loss_of(state)

    def loss_of(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if saved:
            return forward(inputs, targets)
        kept = tools.SavedForBackward(model)
        with kept:
            parts = forward(inputs, targets)
        saved.update(tracker.now(), saved_for_backward=kept.nbytes())
        return parts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracker, tools.OneReads(), tools.eager_decisions():
            steps.accumulated_step(state, tools.Batches(tracker, x, y), 1, loss_of)
    resident = tracker.now()
    states = resident.get("optimizer_states", 0)
    grads = sum(runtime.local_bytes(p) for p in model.parameters() if p.requires_grad)
    phases = {}
    for phase, snap in tracker.phase_peaks.items():
        parts = tools.parts(snap)
        if phase != "optimizer step":  # steady state: the states are there from step 2 on
            parts["optimizer_states"] = parts.get("optimizer_states", 0) + states
        else:  # what the step allocates beyond the states it keeps: its temporaries
            extra = parts.get("optimizer_states", 0) - states
            if sharded:  # see the note below: one fp32 copy of the local trained shard
                extra = grads
            parts["optimizer_states"] = states
            parts["temporaries"] = parts.get("temporaries", 0) + max(extra, 0)
        if ddp is not None:
            held = grads if phase == "forward" else 0  # buckets outlive zero_grad
            if not ddp.gradient_as_bucket_view:
                held += grads
            parts["gradients"] = parts.get("gradients", 0) + held
        phases[phase] = _phase(parts)
    if sharded and "optimizer step" in phases:
        notes.append("FSDP: at the optimizer step PyTorch's FSDP tracker counts 13 to 25 times "
                     "the states it keeps (DTensor states, fused or foreach alike), which no "
                     "run holds; the step's temporaries are counted as one fp32 copy of the "
                     "local trained shard, what a foreach step holds without FSDP")
    if micro > traced_micro:
        notes.append(f"accumulation over {micro} micro-batches traced as {traced_micro}: every "
                     "later micro-batch repeats the second (gradients exist, one micro-batch's "
                     "activations)")
    return {
        "phases": phases,
        "resident": {"weights": resident.get("weights", 0),
                     "buffers": resident.get("buffers", 0),
                     "gradients": grads, "optimizer_states": states,
                     "activations": saved.get("activations", 0),
                     "saved_for_backward": saved.get("saved_for_backward", 0)},
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "micro_batches": micro,
    }


def _low_bit_states(found: dict, state: runtime.TrainState, low_bit: Any,
                    notes: list[str]) -> None:
    """torchao's low-bit AdamW compiles its step (torch.compile, fullgraph), which cannot run on
    fake tensors: the step is traced as fp32 AdamW and its states are put at the low-bit size
    the optimizer's one predictor gives (techniques.optimizer.predicted_state_bytes, the layout
    its state_bytes measures)."""
    from techniques.optimizer import predicted_state_bytes

    numels = [int(p.numel()) for p in state.model.parameters() if p.requires_grad]
    states, how = predicted_state_bytes(numels, "adamw", 0.9, dict(low_bit))
    if states is None:
        raise Untraceable(f"techniques.optimizer_low_bit cannot be estimated: {how}")
    traced = found["resident"]["optimizer_states"]
    found["resident"]["optimizer_states"] = states
    for phase in found["phases"].values():
        parts = phase["parts"]
        if "optimizer_states" in parts:
            parts["optimizer_states"] = states
        phase["peak"] = sum(parts.values())
    notes.append(f"optimizer_low_bit: its compiled step cannot run on fake tensors; traced as "
                 f"fp32 AdamW ({traced:,} bytes of states) with the states put at {how} "
                 f"({states:,} bytes); the step's temporaries are fp32 AdamW's (an upper bound)")


def _phase(parts: dict[str, int]) -> dict:
    parts = {k: v for k, v in parts.items() if v}
    return {"peak": sum(parts.values()), "parts": parts}


def _infer(state: runtime.TrainState, batch: int, config: Any, notes: list[str]) -> dict:
    cfg = config.infer
    model = state.model
    prompts = torch.zeros(batch, cfg.prompt_len, dtype=torch.long)
    tracker = tools.tracker(False, model, None, prompts)
    total = cfg.prompt_len + cfg.gen_len
    cache = None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        with tracker, tools.OneReads(), tools.eager_decisions(), state.step_context():
            if getattr(model, "kind", "") == "hf-encoder":
                tracker.phase = "forward"
                model(prompts)
            else:
                tracker.phase = "prefill"
                cache = model.new_kv_cache(total)
                logits, _ = model(prompts, kv_cache=cache)
                token = logits[:, -1].argmax(dim=-1, keepdim=True)
                del logits
                after_prefill = cache.nbytes()
                tracker.reset_mod_stats()
                tracker.phase = "decode"
                logits, _ = model(token, kv_cache=cache)
                del logits
    kv_now = cache.nbytes() if cache is not None else 0
    kv_full = kv_now
    per_position = kv_now - after_prefill if cache is not None else 0
    if per_position > 0 and total > cache.length:  # a cache that grows: the rest of its tokens
        kv_full = kv_now + per_position * (total - cache.length)
        notes.append(f"the KV cache grows one position per new token: traced to "
                     f"{cache.length} positions, counted at its full {total} (prompt + new "
                     "tokens) by the bytes the decode step added")
    phases = {}
    for phase, snap in tracker.phase_peaks.items():
        parts = tools.parts(snap)
        if cache is not None:
            held = kv_now if phase == "decode" else min(kv_now, parts.get("activations", 0))
            parts["activations"] = max(parts.get("activations", 0) - held, 0)
            parts["kv_cache"] = held + (kv_full - kv_now if phase == "decode" else 0)
        phases[phase] = _phase(parts)
    resident = tracker.now()
    return {"phases": phases,
            "resident": {"weights": resident.get("weights", 0),
                         "buffers": resident.get("buffers", 0), "kv_cache": kv_full},
            "trainable_parameters": 0, "micro_batches": 1}


# --- the entry point --------------------------------------------------------------------------
def trace(config: Any, *, world_size: int | None = None, target: str | None = None,
          batch_size: int | None = None) -> dict:
    """The memory one process of this run holds, traced (see the module doc): plain data in
    profiler.figures.memory_fit's schema. `target`: "cuda" or "cpu", the device the estimate is
    for (default: the config's); `world_size`: the job's processes (default: the config's
    launch); `batch_size`: the micro-batch to trace (default: the config's). Raises Untraceable
    (an Unsupported) with a sentence for a model or technique the trace cannot run."""
    started = time.perf_counter()
    if config.workload not in ("train", "infer"):
        raise Untraceable(f"workload = {config.workload} is not estimated: the trace runs a "
                          "train step or an inference (the compress and distill workloads "
                          "hold two models); estimate the train or infer run of each model")
    world = world_size or config.launch.nproc_per_node * config.launch.nnodes
    target = target or target_of(config)
    notes: list[str] = []
    training = config.workload == "train"
    batch = batch_size or (config.train.batch_size if training else config.infer.batch_size)
    seq = config.train.seq_len if training else config.infer.prompt_len
    if target == "cuda" and not torch.cuda.is_available():
        notes.append("traced with CPU kernels for a CUDA GPU: where CUDA's autocast keeps an op "
                     "in fp32 that the CPU's casts (math attention's softmax), the GPU holds a "
                     "little more; the allocator's 512-byte rounding is in the margin band")
    ddp_params = runtime.enabled_techniques(config).get("ddp") if training else None
    state, wanted, stack, sharded = _prepared(config, target, world, notes)
    with stack:
        try:
            if training:
                found = _train(state, sharded, batch, seq, notes, ddp_params)
            else:
                found = _infer(state, batch, config, notes)
        except Unsupported:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure becomes one sentence
            raise _refusal(f"the {config.workload} step of "
                           f"{model_source.model_label(config.model)}", exc) from None
        parameters = sum(p.numel() for p in state.model.parameters())
        if "optimizer_low_bit" in wanted:
            _low_bit_states(found, state, wanted["optimizer_low_bit"], notes)
    phases = found["phases"]
    peak_phase = max(phases, key=lambda p: phases[p]["peak"])
    sharding = "fsdp" if sharded else "ddp" if ddp_params is not None else "none"
    return {
        "schema": SCHEMA,
        "workload": config.workload,
        "model": model_source.model_label(config.model),
        "parameters": parameters,
        "trainable_parameters": found["trainable_parameters"],
        "batch_size": batch, "seq_len": seq, "micro_batches": found["micro_batches"],
        "gen_len": None if training else config.infer.gen_len,
        "world_size": world, "sharding": sharding if world > 1 else "none",
        "target": target, "traced_on": "cpu",
        "techniques": sorted(wanted),
        "resident": found["resident"],
        "phases": phases,
        "peak": phases[peak_phase]["peak"], "peak_phase": peak_phase,
        "parts": phases[peak_phase]["parts"],
        "notes": notes,
        "seconds": time.perf_counter() - started,
    }


def target_of(config: Any) -> str:
    """The device the estimate is for: the config's, or CUDA when "auto" finds one."""
    if config.device.startswith("cuda"):
        return "cuda"
    if config.device == "auto" and torch.cuda.is_available():
        return "cuda"
    return "cpu"
