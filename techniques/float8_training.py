"""fp8 training (torchao float8): the blocks' Linear layers run their matmuls in float8 (e4m3
forward, e5m2 gradients) with dynamic scales, weights and optimizer stay in high precision.

Only H100 / H200 / Ada class GPUs (compute capability 8.9+) have fp8 tensor cores; elsewhere the
technique is refused with the reason. MFU is n/a under fp8: the device tables give bf16 peaks,
and an fp8 peak would count work the non-fp8 parts (attention, norms) never do at that rate.
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.compile import eager_note
from techniques.registry import Param, TechniqueInfo, TechniqueParams, in_force, register

RECIPES = ("tensorwise", "rowwise")
MIN_CAPABILITY = 8.9


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if (caps.get("cuda_capability") or 0) < MIN_CAPABILITY:
        return ("needs fp8 tensor cores: an NVIDIA GPU of compute capability 8.9 or newer (Ada, "
                "H100, H200); use precision.dtype = bf16 instead")
    return None


INFO = TechniqueInfo(
    name="float8_training",
    label="fp8 training (float8 Linear)",
    category="precision",
    stage="model",
    summary="Runs the blocks' Linear matmuls in float8 with dynamic scaling: up to ~1.5x faster "
            "large matmuls than bf16 on H100-class GPUs; MFU is shown n/a under fp8.",
    source="Micikevicius et al. 2022 (FP8 Formats for Deep Learning); torchao.float8",
    params=(
        Param("recipe", str, "tensorwise", "scaling granularity: one scale per tensor, or per "
              "row (more accurate, a little slower)", choices=RECIPES),
    ),
    requires=("cuda", "package:torchao"),
    conflicts=("lora", "qlora"),
    check=_check,
    extra={"workloads": ("train",), "mfu": "n/a"},
)


def eligible(model) -> tuple[set[str], list[str]]:
    """(names of block Linear layers fp8 can run, sentences about the rest): float8 matmuls need
    both dimensions to be multiples of 16."""
    from techniques.compress_common import target_linears

    chosen, skipped = target_linears(model, "all")
    names = set()
    for name, module in chosen:
        out_features, in_features = module.weight.shape
        if out_features % 16 or in_features % 16:
            skipped.append(f"{name} ({out_features}x{in_features}, not multiples of 16)")
        else:
            names.add(name)
    return names, skipped


def apply(state, params: TechniqueParams) -> str:
    if state.device.type != "cuda":
        raise Unsupported("techniques.float8_training: fp8 matmuls run on CUDA GPUs of compute "
                          "capability 8.9+ only")
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    from techniques.compress_common import skipped_text

    names, skipped = eligible(state.model)
    if not names:
        raise Unsupported("techniques.float8_training: no Linear layer of the blocks has both "
                          "dimensions a multiple of 16; fp8 needs a wider model")
    config = Float8LinearConfig.from_recipe_name(params.recipe)
    convert_to_float8_training(state.model, config=config,
                               module_filter_fn=lambda module, fqn: fqn in names)
    text = (f"converted {len(names)} Linear layers to torchao Float8Linear ({params.recipe} "
            f"scaling); MFU n/a under fp8")
    named = in_force(getattr(state.config, "techniques", None) or {})
    eager = eager_note({**named, INFO.name: params}, getattr(state.config, "workload", "train"))
    if eager:
        state.warn(eager)
        text += f"; {eager}"
    return text + skipped_text(skipped)


register(INFO, apply=apply)
