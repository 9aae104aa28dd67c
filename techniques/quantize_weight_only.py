"""Weight-only quantization (torchao, CUDA): int8 or int4 weights, bf16 / fp32 activations.

Weights are dequantized inside the matmul kernel, so memory traffic shrinks (the win in
memory-bound decoding) while activations keep full precision. torchao's CPU paths are far
slower than the float model and its int4 kernels are CUDA-only, so this runs on CUDA only.
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.registry import Param, TechniqueInfo, register


def _check(params: dict, caps: dict) -> str | None:
    if params["bits"] == 4 and (caps.get("cuda_capability") or 0) < 8.0:
        return ("int4 weight-only quantization packs weights for torchao's tinygemm CUDA kernels, "
                "which need an Ampere or newer GPU (compute capability 8.0+); choose bits = 8")
    return None


INFO = register(TechniqueInfo(
    name="quantize_weight_only",
    label="Weight-only quantization",
    category="compression",
    stage="compress",
    summary="Linear weights in int8 or int4 (4x / 8x smaller than fp32), dequantized in the "
            "kernel: faster memory-bound decoding on GPUs; int4 costs more quality.",
    source="Frantar et al. 2023 (GPTQ); Lin et al. 2023 (AWQ); torchao",
    params=(
        Param("bits", int, 8, "weight bits: 8 (per-channel) or 4 (grouped)", choices=(8, 4)),
        Param("group_size", int, 128, "int4: weights sharing one scale along the input",
              choices=(32, 64, 128, 256)),
        Param("layers", str, "all", "which Linear layers of the blocks: all, attention or mlp",
              choices=("all", "attention", "mlp")),
    ),
    requires=("cuda", "package:torchao"),
    conflicts=("quantize_int8_dynamic",),
    check=_check,
    extra={"acts_on": ("model_bytes",), "workloads": ("infer", "compress")},
))


def apply(state, params: dict) -> str:
    import torch
    from torchao.quantization import quantize_

    from techniques.compress_common import skipped_text, target_linears

    if state.device.type != "cuda":
        raise Unsupported("techniques.quantize_weight_only: runs on CUDA only; on this "
                                  "CPU use quantize_int8_dynamic")
    model = state.model
    chosen, skipped = target_linears(model, params["layers"])
    names = {name for name, _ in chosen}
    note = ""
    if params["bits"] == 4:
        if next(model.parameters()).dtype != torch.bfloat16:
            model.to(torch.bfloat16)  # the int4 kernels take bf16 activations
            note = "; model cast to bf16 first (int4 kernels need it)"
        try:
            from torchao.quantization import Int4WeightOnlyConfig

            config = Int4WeightOnlyConfig(group_size=params["group_size"])
        except ImportError:
            from torchao.quantization import int4_weight_only

            config = int4_weight_only(group_size=params["group_size"])
        kind = f"int4 weight-only (groups of {params['group_size']})"
    else:
        try:
            from torchao.quantization import Int8WeightOnlyConfig

            config = Int8WeightOnlyConfig()
        except ImportError:
            from torchao.quantization import int8_weight_only

            config = int8_weight_only()
        kind = "int8 weight-only (per-channel)"
    quantize_(model, config, filter_fn=lambda module, fqn: fqn in names)
    return f"converted {len(names)} Linear layers to {kind} (torchao){note}{skipped_text(skipped)}"
