"""Weight cast: the whole model's weights in fp16 or bf16, half the bytes of fp32.

Unlike mixed precision (autocast over fp32 weights, for training), the weights themselves are
stored in 16 bits, so memory halves; speed depends on the device's 16-bit matmul kernels (fast
on GPUs, often slower than fp32 on CPUs without AVX512-BF16 / AMX).
"""

from __future__ import annotations

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if params.dtype == "bf16" and not caps.get("bf16"):
        return "this device has no bf16 support; choose dtype = fp16"
    return None


INFO = TechniqueInfo(
    name="weight_cast",
    label="Weight cast (fp16 / bf16)",
    category="compression",
    stage="compress",
    summary="Stores every weight in fp16 or bf16: half the memory of fp32; fast on GPUs, "
            "usually slower on CPUs without native 16-bit matmuls.",
    source="Micikevicius et al. 2018; Kalamkar et al. 2019 (bfloat16)",
    params=(Param("dtype", str, "bf16", "16-bit format of the weights", choices=("bf16", "fp16")),),
    conflicts=("quantize_int8_dynamic",),
    check=_check,
    extra={"acts_on": ("model_bytes",), "workloads": ("infer", "compress")},
)


def apply(state, params: TechniqueParams) -> str:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[params.dtype]
    model = state.model
    floats = [p for p in model.parameters() if p.is_floating_point()]
    model.to(dtype)
    return (f"cast {len(floats)} weight tensors ({sum(p.numel() for p in floats):,} values) to "
            f"{params.dtype}; activations follow the weights' dtype")


register(INFO, apply=apply)
