"""Mixed precision: autocast matmuls to bf16 or fp16 (with a gradient scaler), weights in fp32."""

from __future__ import annotations

import time

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register, validate_params

DTYPES = ("fp32", "bf16", "fp16")


def _check(params: TechniqueParams, caps: dict) -> str | None:
    dtype = params.dtype
    if dtype == "fp16" and not caps.get("cuda"):
        return ("fp16 autocast with a gradient scaler needs a CUDA GPU; on this CPU choose "
                "dtype = bf16 or fp32")
    if dtype == "bf16" and not caps.get("bf16"):
        capability = caps.get("cuda_capability")
        if caps.get("cuda") and capability:
            return (f"this GPU (compute capability {capability:g}) has no bf16 units: torch "
                    "would emulate bf16, slower than fp32; choose dtype = fp16 or fp32 (bf16 "
                    "needs compute capability 8.0+, Ampere or newer)")
        return "this device has no bf16 support; choose fp16 (CUDA) or fp32"
    return None


INFO = TechniqueInfo(
    name="precision",
    label="Mixed precision",
    category="precision",
    stage="loop",
    summary="Runs matmuls in bf16 / fp16 under autocast with fp32 weights: about half the "
            "activation memory and tensor-core speed on GPUs; slower on CPUs without bf16 units.",
    source="Micikevicius et al. 2018 (mixed precision training)",
    params=(Param("dtype", str, "bf16", "Autocast dtype (fp16 adds a gradient scaler)", choices=DTYPES),),
    mid_run=("enabled", "dtype"),
    check=_check,
)


def _bf16_slowdown_on_cpu() -> float:
    """How many times slower a bf16 matmul is than fp32 here (measured, a few milliseconds)."""
    import torch

    a = torch.randn(256, 256)
    b = torch.randn(256, 256)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm
        started = time.perf_counter()
        for _ in range(10):
            x @ y
        timings[dtype] = time.perf_counter() - started
    return timings[torch.bfloat16] / max(timings[torch.float32], 1e-9)


def apply(state, params: TechniqueParams) -> str:
    import torch

    from techniques.runtime import refresh_scaler

    dtype = params.dtype
    state.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    refresh_scaler(state)
    if dtype == "fp32":
        return "fp32 everywhere (autocast off)"
    text = f"{dtype} autocast on {state.device.type}, weights and optimizer in fp32"
    if dtype == "fp16":
        text += (", dynamic loss scaling (ShardedGradScaler: inf checks reduced over the job)"
                 if "fsdp" in state.active else ", dynamic loss scaling (GradScaler)")
    if dtype == "bf16" and state.device.type == "cpu":
        slowdown = _bf16_slowdown_on_cpu()
        if slowdown > 1.2:
            state.warn(f"bf16 matmuls measured {slowdown:.0f}x slower than fp32 on this CPU (no "
                       "native bf16 units in use): expect lower throughput; bf16 pays off on GPUs "
                       "and CPUs with AMX / AVX512-BF16")
            text += f" (measured {slowdown:.0f}x slower than fp32 for matmuls here)"
    return text


change = apply  # a new setting is applied the same way


def remove(state) -> str:
    return apply(state, validate_params(INFO.name, {"dtype": "fp32"}))


register(INFO, apply=apply, change=change, remove=remove)
