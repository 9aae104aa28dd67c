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


FORWARD_ONLY = ("infer", "compress")
"""Workloads that apply no compile stage (profiler.workloads.setup.INFER_STAGES): they run eager."""


def eager_formats(in_force: dict[str, dict], workload: str) -> list[str]:
    """The torchao formats in force that are slower than their baseline without torch.compile,
    when the run does not compile (else []). int8 weight-only dequantizes the whole weight in
    every call and fp8 training casts and scales tensors op by op: both pay off only once
    torch.compile fuses those steps into the matmul. (int4 weight-only runs its own fused
    tinygemm kernel, eager or not.)"""
    if "compile" in in_force and workload not in FORWARD_ONLY:
        return []
    slow = []
    if in_force.get("quantize_weight_only", {}).get("bits") == 8:
        slow.append("int8 weight-only")
    if "float8_training" in in_force:
        slow.append("fp8 training")
    return slow


def eager_note(in_force: dict[str, dict], workload: str) -> str | None:
    """The warning a run gets for eager_formats, or None."""
    slow = eager_formats(in_force, workload)
    if not slow:
        return None
    fix = ("this workload runs eager, so read its speed as the eager cost"
           if workload in FORWARD_ONLY else "add [techniques.compile] to measure the fast path")
    return (f"eager mode: {' and '.join(slow)} runs slower than its baseline without "
            "torch.compile (torchao dequantizes or casts in every call, which only compile "
            f"fuses into the matmul); {fix}")


def eager_how(in_force: dict[str, dict], workload: str) -> str:
    """What a timed figure's how-text adds for eager_formats ("" when none)."""
    slow = eager_formats(in_force, workload)
    return f"; eager: {' and '.join(slow)} without torch.compile" if slow else ""
