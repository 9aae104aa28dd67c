"""The dtype a run's model computes in, read from the techniques in force (torch-free).

Some kernels exist for 16-bit inputs only — flash and cuDNN attention, the 2:4 sparse kernels —
and refuse fp32 at the first call, after the model was built and maybe trained. Checks ask here
before the run, from the config alone, so the refusal is a sentence (exit 2), not a crash.
"""

from __future__ import annotations

FP32 = "fp32"


def weights(in_force: dict[str, dict], workload: str) -> str:
    """The dtype of the blocks' float weights after the compress stage: a weight cast's dtype,
    bf16 under int4 weight-only (it casts the model for its kernels), fp32 otherwise (every
    model source loads fp32; training keeps fp32 master weights)."""
    if workload not in ("infer", "compress"):
        return FP32
    if "weight_cast" in in_force:
        return in_force["weight_cast"].get("dtype", "bf16")
    if in_force.get("quantize_weight_only", {}).get("bits") == 4:
        return "bf16"
    return FP32


def activations(in_force: dict[str, dict], workload: str) -> str:
    """The dtype the matmuls and attention of the measured model see: autocast's (precision)
    or FSDP's compute dtype when a run trains; the weights' dtype when it only runs forward
    (infer and compress apply no autocast)."""
    if workload in ("infer", "compress"):
        return weights(in_force, workload)
    dtype = in_force.get("precision", {}).get("dtype", FP32)
    if dtype != FP32:
        return dtype
    mixed = in_force.get("fsdp", {}).get("mixed_precision", "none")
    return mixed if mixed != "none" else FP32
