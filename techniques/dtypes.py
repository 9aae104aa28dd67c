"""The dtype a run's model computes in, read from the techniques in force (torch-free).

Some kernels exist for 16-bit inputs only — flash and cuDNN attention, the 2:4 sparse kernels —
and refuse fp32 at the first call, after the model was built and maybe trained. Checks ask here
before the run, from the config alone, so the refusal is a sentence (exit 2), not a crash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from techniques.params import TechniqueParams

FP32 = "fp32"


def weights(in_force: dict[str, TechniqueParams], workload: str) -> str:
    """The dtype of the blocks' float weights after the compress stage: a weight cast's dtype,
    bf16 under int4 weight-only (it casts the model for its kernels), fp32 otherwise (every
    model source loads fp32; training keeps fp32 master weights)."""
    if workload not in ("infer", "compress"):
        return FP32
    if "weight_cast" in in_force:
        return in_force["weight_cast"].dtype
    quantized = in_force.get("quantize_weight_only")
    if quantized is not None and quantized.bits == 4:
        return "bf16"
    return FP32


def activations(in_force: dict[str, TechniqueParams], workload: str) -> str:
    """The dtype the matmuls and attention of the measured model see: autocast's (precision)
    or FSDP's compute dtype when a run trains; the weights' dtype when it only runs forward
    (infer and compress apply no autocast)."""
    if workload in ("infer", "compress"):
        return weights(in_force, workload)
    precision = in_force.get("precision")
    if precision is not None and precision.dtype != FP32:
        return precision.dtype
    fsdp = in_force.get("fsdp")
    return fsdp.mixed_precision if fsdp is not None and fsdp.mixed_precision != "none" else FP32
