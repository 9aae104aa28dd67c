"""The checks of `effiscope doctor` that mean something on a CPU too (and run on CUDA as well).

A check is a small function of a Context (profiler.cli.doctor.base) that returns its figures (a
JSON-able dict; the key "summary" becomes its one line on the terminal). It raises Skip(reason) where it has no meaning
here and CheckFailed(message, figures) where what it measured is wrong; any other exception is a
failure as well. Each check builds on the project's own pieces — the built-in GPT, RunConfig, the
technique engine (techniques.runtime) and the train workload's train_step — so it verifies the
paths a run takes, not a copy of them. The memory and distributed checks are in
checks_memory.py and checks_distributed.py, the CUDA-only ones in checks_gpu.py, checks_cuda.py,
checks_compression.py and checks_techniques.py.
"""

from __future__ import annotations

import copy
import importlib.metadata
import math
import platform
import warnings

import torch
import torch.nn.functional as F

from profiler.cli.doctor.base import (
    CheckFailed,
    CheckSpec,
    Context,
    Skip,
    distribution,
    finite,
    make_batches,
    make_state,
    max_rel_diff,
    steps,
    time_calls,
    train,
    train_config,
)
from profiler.config import RunConfig
from profiler.models.gpt import build_gpt


# --- checks --------------------------------------------------------------------------------
def check_versions(ctx: Context) -> dict:
    from profiler.measure.system import describe_host

    host = describe_host()
    packages = {}
    for name in ("psutil", "nvidia-ml-py", "safetensors", "platformdirs", "tomli-w",
                 "transformers", "torchao", "triton"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    figures = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda, "cudnn": cudnn,
        "driver": host["gpus"][0]["driver"] if host["gpus"] else None,
        "nvml_note": host["gpu_note"] or None, "cpu": host["cpu"], "os": host["os"],
        "device": str(ctx.device), "packages": packages, "capabilities": ctx.caps,
    }
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        figures.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                       gpu_memory_bytes=props.total_memory,
                       multiprocessors=props.multi_processor_count)
    figures["summary"] = (f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, "
                          f"driver {figures['driver'] or 'n/a'}, {figures.get('gpu', host['cpu'])}")
    missing = [n for n in ("psutil", "nvidia-ml-py", "safetensors") if packages[n] is None]
    if missing:
        raise CheckFailed(f"required packages missing: {', '.join(missing)}; pip install them",
                          figures)
    return figures


def check_train_fp32(ctx: Context) -> dict:
    config = train_config(ctx)
    result = train(make_state(ctx, config), make_batches(ctx, config, 4), steps(ctx), warmup=3)
    losses = result["losses"]
    figures = {"model": config.model.preset, "batch": config.train.batch_size,
               "seq_len": config.train.seq_len, "loss_first": losses[0], "loss_last": losses[-1],
               "step_time_s": distribution(result["times"], "s"),
               "tokens_per_s": result["tokens"] / sum(result["times"]),
               "summary": f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps"}
    if not finite(losses):
        raise CheckFailed("a loss is not finite in fp32", figures)
    if sum(losses[-3:]) / 3 >= losses[0]:
        raise CheckFailed("the loss did not fall over the steps (4 batches repeated)", figures)
    return figures


def _fp32_losses(ctx: Context, config: RunConfig, batches: list) -> list[float]:
    key = ("fp32", config.model.preset, config.train.batch_size, config.train.seq_len)
    if key not in ctx.cache:
        plain = copy.deepcopy(config)
        plain.techniques = {}
        ctx.cache[key] = train(make_state(ctx, plain), batches, steps(ctx))["losses"]
    return ctx.cache[key]


def autocast_against_fp32(ctx: Context, dtype: str, tolerance: float = 0.05) -> dict:
    """Train with autocast in `dtype` and in fp32 on the same batches from the same weights."""
    config = train_config(ctx, {"precision": {"dtype": dtype}})
    batches = make_batches(ctx, config, 4)
    state = make_state(ctx, config)
    result = train(state, batches, steps(ctx), warmup=3)
    reference = _fp32_losses(ctx, config, batches)
    losses = result["losses"]
    figures = {"model": config.model.preset, "batch": config.train.batch_size,
               "seq_len": config.train.seq_len, "loss_first": losses[0], "loss_last": losses[-1],
               "fp32_loss_last": reference[-1],
               "max_rel_diff_vs_fp32": max_rel_diff(losses, reference) if finite(losses) else None,
               "tolerance": tolerance, "grad_scaler": state.scaler.is_enabled(),
               "step_time_s": distribution(result["times"], "s"),
               "report": state.reports.get("precision")}
    if state.scaler.is_enabled():
        figures["loss_scale"] = float(state.scaler.get_scale())
    if not finite(losses):
        raise CheckFailed(f"a loss is not finite under {dtype} autocast", figures)
    if figures["max_rel_diff_vs_fp32"] > tolerance:
        raise CheckFailed(f"{dtype} losses drift {figures['max_rel_diff_vs_fp32']:.1%} from fp32 "
                          f"(allowed {tolerance:.0%})", figures)
    figures["summary"] = (f"{len(losses)} steps, at most {figures['max_rel_diff_vs_fp32']:.2%} "
                          "from fp32")
    return figures


def check_train_bf16(ctx: Context) -> dict:
    if not ctx.caps.get("bf16"):
        raise Skip("this device has no bf16 support")
    return autocast_against_fp32(ctx, "bf16")


def check_train_fp16(ctx: Context) -> dict:
    figures = autocast_against_fp32(ctx, "fp16")
    if not figures["grad_scaler"]:
        raise CheckFailed("fp16 autocast ran without an enabled GradScaler", figures)
    return figures


def check_adamw(ctx: Context) -> dict:
    """for-loop / foreach / fused AdamW on identical weights and gradients: equal updates."""
    config = train_config(ctx)
    impls = ["for-loop", "foreach"] + (["fused"] if "adamw" in ctx.caps.get("fused", []) else [])
    torch.manual_seed(config.seed)
    base = build_gpt(config.model.preset).to(ctx.device)
    x, y = make_batches(ctx, config, 1)[0]
    base(x, y)[1].backward()
    grads = [p.grad.detach().clone() for p in base.parameters()]
    start = [p.detach().clone() for p in base.parameters()]
    finals, figures = {}, {"implementations": impls, "optimizer_step_s": {}}
    for impl in impls:
        cfg = copy.deepcopy(config)
        cfg.techniques = {"optimizer": {"algorithm": "adamw", "implementation": impl}}
        model = copy.deepcopy(base)
        state = make_state(ctx, cfg, model=model)
        defaults = state.optimizer.defaults
        used = "fused" if defaults.get("fused") else "foreach" if defaults.get("foreach") else "for-loop"
        if used != impl:
            raise CheckFailed(f"asked for {impl} AdamW, the engine built {used}", figures)

        def step(model=model, optimizer=state.optimizer) -> None:
            for param, grad in zip(model.parameters(), grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()

        for _ in range(3):
            step()
        finals[impl] = [p.detach().clone() for p in model.parameters()]
        times = time_calls(ctx, step, repeats=5 if ctx.quick else 10, warmup=0)
        figures["optimizer_step_s"][impl] = distribution(times, "s")
    reference = finals["for-loop"]
    update = max(float((r - s).abs().max()) for r, s in zip(reference, start, strict=True))
    figures["max_update"] = update
    figures["max_abs_diff_vs_for_loop"] = {
        impl: max(float((a - b).abs().max()) for a, b in zip(params, reference, strict=True))
        for impl, params in finals.items() if impl != "for-loop"}
    worst = max(figures["max_abs_diff_vs_for_loop"].values())
    figures["summary"] = (f"{', '.join(impls)}: largest difference {worst:.2g} after 3 steps "
                          f"(updates up to {update:.2g})")
    if update <= 0:
        raise CheckFailed("AdamW did not change the weights", figures)
    if worst > 1e-6:
        raise CheckFailed(f"AdamW implementations disagree by {worst:.3g} (allowed 1e-6)", figures)
    return figures


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    seq = q.size(-2)
    mask = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def check_sdpa_cpu(ctx: Context) -> dict:
    """SDPA's default against its math backend and the explicit formula; a backend the CPU
    lacks must refuse under sdpa_kernel (proof that the restriction applies)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 32, generator=gen) for _ in range(3))
    default = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with sdpa_kernel([SDPBackend.MATH]):
        math_out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    explicit = _explicit_attention(q, k, v)
    refused = False
    with warnings.catch_warnings(), sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        warnings.simplefilter("ignore")
        try:
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
        except RuntimeError:
            refused = True
    # Through the engine: the attention technique's sdpa and math implementations in the model.
    logits = {}
    for impl in ("sdpa", "math"):
        config = train_config(ctx, {"attention": {"implementation": impl}})
        state = make_state(ctx, config)
        x, _ = make_batches(ctx, config, 1)[0]
        with torch.no_grad(), state.step_context():
            logits[impl] = state.forward_model(x)[0]
    figures = {"default_vs_math": float((default - math_out).abs().max()),
               "math_vs_explicit": float((math_out - explicit).abs().max()),
               "model_sdpa_vs_math_logits": float((logits["sdpa"] - logits["math"]).abs().max()),
               "efficient_backend_refused_on_cpu": refused}
    worst = max(v for v in figures.values() if not isinstance(v, bool))
    figures["summary"] = f"default, math and explicit attention agree to {worst:.2g}"
    if worst > 1e-4:
        raise CheckFailed(f"attention implementations disagree by {worst:.3g} (allowed 1e-4)",
                          figures)
    if not refused:
        raise CheckFailed("sdpa_kernel([EFFICIENT_ATTENTION]) ran on the CPU, which has no such "
                          "kernel: the backend restriction did not apply", figures)
    return figures


CHECKS = [
    CheckSpec("versions", "torch / CUDA / driver versions and packages", check_versions),
    CheckSpec("train_fp32", "train step in fp32 (finite, learning)", check_train_fp32),
    CheckSpec("train_bf16", "train step under bf16 autocast, close to fp32", check_train_bf16),
    CheckSpec("train_fp16", "train step under fp16 autocast + GradScaler, close to fp32",
              check_train_fp16, cuda_only=True),
    CheckSpec("adamw", "AdamW for-loop / foreach / fused give equal updates", check_adamw),
]
