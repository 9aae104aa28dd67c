"""Attention implementation: explicit softmax(QK^T)V with a causal mask, or PyTorch's fused
scaled_dot_product_attention (with a choice of its CUDA backends)."""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.registry import (
    Param,
    RunFacts,
    TechniqueInfo,
    TechniqueParams,
    register,
    validate_params,
)

IMPLEMENTATIONS = ("sdpa", "math")
BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
SIXTEEN_BIT_ONLY = ("flash", "cudnn")
"""Backends with no fp32 kernel: they refuse fp32 inputs at the first call (flash also refuses
any attn_mask; the built-in GPT passes none, with or without its KV cache)."""


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if params.backend in ("flash", "efficient", "cudnn") and not caps.get("cuda"):
        return (f"the {params.backend} SDPA backend runs on CUDA GPUs only; choose backend = "
                "auto on this machine")
    if params.backend != "auto" and params.implementation != "sdpa":
        return "a backend applies to implementation = sdpa only"
    return None


def _config_check(params: TechniqueParams, facts: RunFacts) -> str | None:
    """A 16-bit-only backend where attention runs in fp32 (the techniques in force decide)."""
    from techniques import dtypes

    workload = facts.workload
    backend = params.backend
    if params.implementation != "sdpa" or backend not in SIXTEEN_BIT_ONLY:
        return None
    if workload == "compress":
        return (f"the {backend} SDPA backend has no fp32 kernel, and a compress run times the "
                "original fp32 model beside the compressed one; choose backend = auto or "
                "efficient")
    if dtypes.activations(facts.techniques, workload) != dtypes.FP32:
        return None
    fix = ("add [techniques.weight_cast] (bf16 or fp16)" if workload == "infer"
           else "set [techniques.precision] dtype = bf16 (or fp16)")
    return (f"the {backend} SDPA backend has no fp32 kernel and this {workload} run computes "
            f"attention in fp32; {fix}, or choose backend = auto or efficient")


INFO = TechniqueInfo(
    name="attention",
    label="Attention kernel",
    category="speed",
    stage="model",
    summary="SDPA fuses attention (flash / memory-efficient kernels) and never stores the T x T "
            "score matrix; the explicit version does, at O(T^2) memory per head.",
    source="Dao et al. 2022 (FlashAttention); Rabe & Staats 2021",
    params=(
        Param("implementation", str, "sdpa", "sdpa (fused) or math (explicit softmax(QK^T)V)",
              choices=IMPLEMENTATIONS),
        Param("backend", str, "auto", "SDPA backend on CUDA (auto lets PyTorch pick)", choices=BACKENDS),
    ),
    mid_run=("enabled", "implementation", "backend"),
    check=_check,
    config_check=_config_check,
)


def _backends(params: TechniqueParams) -> list | None:
    """The SDPA backends to allow (None: PyTorch picks)."""
    if params.implementation != "sdpa" or params.backend == "auto":
        return None
    from torch.nn.attention import SDPBackend

    return [{"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[params.backend]]


def apply(state, params: TechniqueParams) -> str:
    model = state.model
    if not hasattr(model, "set_attention"):
        raise Unsupported("this model has no attention switch")
    backends = _backends(params)
    if getattr(state, "compiled", False) and backends != state.sdpa_backends:
        from techniques.runtime import Refused

        # The backend is chosen when torch.compile traces SDPA and baked into the graph; no
        # guard sees the sdpa_kernel context change, so the compiled model would go on as it was.
        raise Refused("Attention kernel: under torch.compile the SDPA backend is fixed in the "
                      "compiled graph, so changing it mid-run would not take effect; restart "
                      f"the run with backend = {params.backend}")
    model.set_attention(params.implementation)
    state.sdpa_backends = backends
    text = ("explicit softmax(QK^T/sqrt(d))V with a causal mask" if params.implementation == "math"
            else "torch scaled_dot_product_attention (causal)")
    if hasattr(model, "hf"):  # a Hugging Face model: its own attn_implementation switch
        text = (f"transformers attn_implementation = "
                f"{'eager' if params.implementation == 'math' else 'sdpa'}")
    if backends:
        text += f", {params.backend} backend only"
    return text + f" in {len(model.blocks)} blocks"


change = apply  # a new setting is applied the same way


def remove(state) -> str:
    return apply(state, validate_params(INFO.name, {"implementation": "sdpa", "backend": "auto"}))


register(INFO, apply=apply, change=change, remove=remove)
