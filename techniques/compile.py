"""torch.compile: traces the model into fused kernels; the first steps pay for compilation."""

from __future__ import annotations

from techniques.registry import Param, TechniqueInfo, register

MODES = ("default", "reduce-overhead", "max-autotune")

INFO = register(TechniqueInfo(
    name="compile",
    label="torch.compile",
    category="speed",
    stage="compile",
    summary="Compiles the model with TorchInductor: fewer, fused kernels per step after a "
            "one-time compile (tens of seconds; excluded from throughput, reported on its own).",
    source="Ansel et al. 2024 (PyTorch 2)",
    params=(Param("mode", str, "default", "Compile mode (reduce-overhead adds CUDA graphs)", choices=MODES),),
    requires=("compiler",),
))


def apply(state, params: dict) -> str:
    import torch

    state.compile_options = {"mode": params["mode"]}
    state.forward_model = torch.compile(state.model, **state.compile_options)
    state.compiled = True
    return (f"torch.compile(mode={params['mode']!r}); compilation happens in the first steps, "
            "which are reported as compile time and left out of throughput")
