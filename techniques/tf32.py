"""TF32 matmuls on Ampere+ GPUs: fp32 tensors, tensor cores with a 10-bit mantissa."""

from __future__ import annotations

from techniques.registry import TechniqueInfo, TechniqueParams, register

INFO = TechniqueInfo(
    name="tf32",
    label="TF32 matmuls",
    category="precision",
    stage="model",
    summary="Lets fp32 matmuls use tensor cores in TF32 (10-bit mantissa): several times faster "
            "fp32 math on Ampere or newer, slightly less precise.",
    source="NVIDIA A100 whitepaper (2020)",
    requires=("cuda", "ampere"),
    mid_run=("enabled",),
)


def _set(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def apply(state, params: TechniqueParams) -> str:
    _set(True)
    return "fp32 matmuls and convolutions may use TF32 tensor cores"


change = apply  # a new setting is applied the same way


def remove(state) -> str:
    _set(False)
    return "TF32 off: full fp32 matmuls"


register(INFO, apply=apply, change=change, remove=remove)
