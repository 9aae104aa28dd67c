"""2:4 semi-structured sparsity: in every 4 consecutive weights, the 2 smallest become zero.

Sparse tensor cores on Ampere and newer NVIDIA GPUs multiply such matrices from a compressed
form (half the values plus 2-bit indices): up to ~2x faster matmuls at 50 % sparsity.

Three steps in the engine's order (techniques/runtime.py): `apply` puts 2:4 masks on the chosen
weights (fp32, with the other pruners), `finalize` folds them in before any format change, and
`after_formats` converts the folded weights to torch's compressed 2:4 form once the format stage
gave them their final dtype — the sparse kernels (cuSPARSELt) take fp16 / bf16, not fp32, so a
conversion before the weight cast would leave every layer dense. `accelerate` therefore needs a
16-bit weight cast, and is refused before the run without one.
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.registry import Param, RunFacts, TechniqueInfo, TechniqueParams, register


def _overlaps(a: str, b: str) -> bool:
    """Two `layers` choices (all / attention / mlp) touch a common layer."""
    return a == b or "all" in (a, b)


def _config_check(params: TechniqueParams, facts: RunFacts) -> str | None:
    """2:4's compressed form against the other formats in force (one format per weight, and
    sparse kernels that take 16-bit weights)."""
    from techniques import dtypes

    in_force = facts.techniques
    if not params.accelerate:
        return None
    quantized = in_force.get("quantize_weight_only")
    if quantized is not None and _overlaps(params.layers, quantized.layers):
        return ("accelerate = true stores the weights in the compressed 2:4 form and "
                "quantize_weight_only stores the same layers in torchao's integer form; a weight "
                "has one format, so set accelerate = false (2:4-pruned weights, then quantized) "
                "or give them different layers (attention / mlp)")
    weights = dtypes.weights(in_force, facts.workload)
    if weights == dtypes.FP32:
        return ("accelerate = true converts the weights to the compressed 2:4 form, whose sparse "
                "kernels take fp16 / bf16 weights, and this model's weights stay fp32; add "
                "[techniques.weight_cast] (bf16 or fp16) or set accelerate = false")
    return None


INFO = TechniqueInfo(
    name="prune_semi_structured",
    label="2:4 semi-structured sparsity",
    category="compression",
    stage="compress",
    summary="Keeps the 2 largest of every 4 weights; sparse tensor cores (Ampere+) run the "
            "compressed matrices faster. CUDA only.",
    source="Mishra et al. 2021 (Accelerating sparse deep neural networks); Frantar & Alistarh "
           "2023 (SparseGPT)",
    params=(
        Param("layers", str, "all", "which Linear layers of the blocks: all, attention or mlp",
              choices=("all", "attention", "mlp")),
        Param("accelerate", bool, True, "after pruning and the weight cast, convert weights to "
              "torch's compressed 2:4 format so sparse kernels run (needs weight_cast: fp16 / "
              "bf16 weights)"),
    ),
    requires=("cuda", "ampere"),
    config_check=_config_check,
    extra={"workloads": ("infer", "compress")},
)


def apply(state, params: TechniqueParams) -> str:
    from torch.nn.utils import prune

    from techniques.compress_common import (
        semi_structured_mask,
        skipped_text,
        sparsity,
        target_linears,
    )

    if state.device.type != "cuda":
        raise Unsupported("techniques.prune_semi_structured: 2:4 sparse kernels run on "
                                  "CUDA GPUs only; on this machine use prune_magnitude")
    chosen, skipped = target_linears(state.model, params.layers)
    chosen = [(n, m) for n, m in chosen if m.weight.size(1) % 4 == 0]
    for _, module in chosen:
        prune.custom_from_mask(module, "weight", semi_structured_mask(module.weight))
    measured = sparsity([m.weight for _, m in chosen])
    return (f"2:4-pruned {len(chosen)} Linear layers ({measured:.1%} of their weights zero)"
            f"{skipped_text(skipped)}")


def finalize(state, params: TechniqueParams) -> str:
    """Fold the masks into the weights (before any format change)."""
    from techniques.compress_common import make_permanent

    folded = make_permanent(state.model)
    if not params.accelerate:
        return f"made permanent in {folded} tensors (dense kernels)"
    return (f"made permanent in {folded} tensors; the compressed 2:4 form follows the weight "
            "cast")


def after_formats(state, params: TechniqueParams) -> str:
    """Convert the folded 2:4 weights to torch's compressed form, now in their final dtype."""
    import torch
    from torch.sparse import to_sparse_semi_structured

    from techniques.compress_common import target_linears

    if not params.accelerate:
        return "kept in dense form (accelerate = false)"
    converted, failed, kinds = 0, [], set()
    for name, module in target_linears(state.model, params.layers)[0]:
        try:
            kinds.add(str(module.weight.dtype).removeprefix("torch."))
            module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight),
                                               requires_grad=False)
            converted += 1
        except (RuntimeError, ValueError, TypeError) as exc:
            failed.append(f"{name} ({str(exc).splitlines()[0][:80]})")
    text = (f"{converted} layers in compressed 2:4 form ({', '.join(sorted(kinds))}) for "
            "sparse kernels")
    if failed:
        text += f"; kept dense: {', '.join(failed[:3])}" + (" ..." if len(failed) > 3 else "")
    return text


register(INFO, apply=apply, finalize=finalize, after_formats=after_formats)
