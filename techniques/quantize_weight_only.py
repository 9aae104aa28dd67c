"""Weight-only quantization (torchao, CUDA): int8 or int4 weights, bf16 / fp32 activations.

Weights are dequantized inside the matmul kernel, so memory traffic shrinks (the win in
memory-bound decoding) while activations keep full precision. torchao's CPU paths are far
slower than the float model and its int4 kernels are CUDA-only, so this runs on CUDA only.

int4 asks for torchao's tinygemm packing ("tile_packed_to_4d": bf16, SM 8.0+, shipped inside
torchao): torchao 0.14+ defaults to a "plain" packing whose kernels live in a separate package
(fbgemm-gpu-genai, later mslk) and raise ImportError without it. Older torchao has no such
parameter and packs for tinygemm by default. Either way tinygemm pads every weight's in_features
to a multiple of 1024 (and out_features to a multiple of 8), so a narrow model's int4 weights
take more memory than their parameter count says. A missing kernel package is refused with its
name, never a crash.
"""

from __future__ import annotations

import inspect
import re

from profiler.errors import Unsupported
from techniques.compile import eager_note
from techniques.registry import Param, TechniqueInfo, TechniqueParams, in_force, register

TINYGEMM_PACKING = "tile_packed_to_4d"
TINYGEMM_IN_FEATURES = 1024
"""tinygemm pads in_features up to a multiple of this."""
PIP_NAMES = {"mslk": "mslk-cuda", "fbgemm_gpu": "fbgemm-gpu-genai"}
"""Kernel packages whose pip name differs from the name torchao reports."""


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if params.bits == 4 and (caps.get("cuda_capability") or 0) < 8.0:
        return ("int4 weight-only quantization packs weights for torchao's tinygemm CUDA kernels, "
                "which need an Ampere or newer GPU (compute capability 8.0+); choose bits = 8")
    return None


INFO = TechniqueInfo(
    name="quantize_weight_only",
    label="Weight-only quantization",
    category="compression",
    stage="compress",
    summary="Linear weights in int8 or int4 (4x / 8x smaller than fp32), dequantized in the "
            "kernel: faster memory-bound decoding on GPUs; int4 costs more quality.",
    source="Frantar et al. 2023 (GPTQ); Lin et al. 2023 (AWQ); torchao",
    params=(
        Param("bits", int, 8, "weight bits: 8 (per-channel) or 4 (grouped, tinygemm packing; "
              "in_features padded to a multiple of 1024)", choices=(8, 4)),
        Param("group_size", int, 128, "int4: weights sharing one scale along the input",
              choices=(32, 64, 128, 256)),
        Param("layers", str, "all", "which Linear layers of the blocks: all, attention or mlp",
              choices=("all", "attention", "mlp")),
    ),
    requires=("cuda", "package:torchao"),
    conflicts=("quantize_int8_dynamic",),
    check=_check,
    extra={"acts_on": ("model_bytes",), "workloads": ("infer", "compress")},
)


def int4_config(config_cls, group_size: int):
    """An int4 weight-only config for tinygemm: the packing is asked for where the config has
    the parameter (torchao 0.14+), found by its signature, not by torchao's version."""
    parameter = inspect.signature(config_cls).parameters.get("int4_packing_format")
    if parameter is None:  # torchao <= 0.13: the tensor-core tiled (tinygemm) layout is default
        return config_cls(group_size=group_size)
    default = parameter.default
    packing = type(default)(TINYGEMM_PACKING) if isinstance(default, str) else TINYGEMM_PACKING
    return config_cls(group_size=group_size, int4_packing_format=packing)


def missing_package(exc: ImportError) -> str:
    """The package an ImportError says is missing: its module name, or the name after
    "Requires" in torchao's own messages ("Requires mslk >= 1.0.0")."""
    if exc.name:
        return exc.name.split(".")[0]
    text = str(exc)
    match = (re.search(r"[Rr]equires?\s+(?:the\s+)?([A-Za-z][\w.\-]*)", text)
             or re.search(r"No module named '([\w.]+)'", text))
    return match.group(1).split(".")[0] if match else (text.splitlines() or ["a package"])[0][:80]


def refusal(exc: ImportError, kind: str) -> Unsupported:
    """Unsupported naming the kernel package torchao could not import, and how to get it."""
    package = missing_package(exc)
    pip = PIP_NAMES.get(package.replace("-", "_"), package)
    fix = "choose bits = 8" if kind.startswith("int4") else "remove the technique"
    return Unsupported(f"techniques.quantize_weight_only: torchao's {kind} kernels need the "
                       f"Python package {package}, which this environment lacks; install it "
                       f"(pip install {pip}) or {fix}")


def _config(bits: int, group_size: int):
    """torchao's config object for these bits (a config class on torchao 0.10+, the older
    function otherwise)."""
    import torchao.quantization as tq

    if bits == 4:
        if hasattr(tq, "Int4WeightOnlyConfig"):
            return int4_config(tq.Int4WeightOnlyConfig, group_size)
        return tq.int4_weight_only(group_size=group_size)
    if hasattr(tq, "Int8WeightOnlyConfig"):
        return tq.Int8WeightOnlyConfig()
    return tq.int8_weight_only()


def is_quantized(weight) -> bool:
    """torchao swaps a converted weight for a tensor subclass; a skipped one stays plain."""
    import torch

    return type(weight) not in (torch.Tensor, torch.nn.Parameter)


def apply(state, params: TechniqueParams) -> str:
    import torch

    from techniques.compress_common import keep_matmul_precision, skipped_text, target_linears

    if state.device.type != "cuda":
        raise Unsupported("techniques.quantize_weight_only: runs on CUDA only; on this "
                          "CPU use quantize_int8_dynamic")
    model = state.model
    chosen, skipped = target_linears(model, params.layers)
    names = {name for name, _ in chosen}
    bits, group = params.bits, params.group_size
    note = ""
    if bits == 4:
        kind = f"int4 weight-only (groups of {group})"
        if next(model.parameters()).dtype != torch.bfloat16:
            model.to(torch.bfloat16)  # the tinygemm kernels take bf16 activations
            note = "; model cast to bf16 first (int4 kernels need it)"
        narrow = [n for n, m in chosen if m.in_features % TINYGEMM_IN_FEATURES]
        if narrow:
            note += (f"; in_features of {len(narrow)} layers padded to a multiple of "
                     f"{TINYGEMM_IN_FEATURES} (tinygemm tiles), so they hold more than their "
                     "parameter count")
    else:
        kind = "int8 weight-only (per-channel)"
    try:
        from torchao.quantization import quantize_

        with keep_matmul_precision():
            quantize_(model, _config(bits, group), filter_fn=lambda module, fqn: fqn in names)
    except ImportError as exc:
        raise refusal(exc, kind) from None
    converted = [n for n, m in chosen if is_quantized(m.weight)]
    left = sorted(names - set(converted))
    if left:  # torchao leaves a weight it cannot pack (int4: in_features not a multiple of
        why = (f"in_features not a multiple of {group}" if bits == 4  # the group) as it was
               else "left unquantized by torchao")
        skipped = skipped + [f"{n} ({why})" for n in left]
    named = in_force(getattr(state.config, "techniques", None) or {})
    eager = eager_note({**named, INFO.name: params}, getattr(state.config, "workload", "infer"))
    if eager:
        state.warn(eager)
        note += f"; {eager}"
    return (f"converted {len(converted)} Linear layers to {kind} (torchao){note}"
            f"{skipped_text(skipped)}")


register(INFO, apply=apply)
