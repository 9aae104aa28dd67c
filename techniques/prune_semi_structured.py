"""2:4 semi-structured sparsity: in every 4 consecutive weights, the 2 smallest become zero.

Sparse tensor cores on Ampere and newer NVIDIA GPUs multiply such matrices from a compressed
form (half the values plus 2-bit indices): up to ~2x faster matmuls at 50 % sparsity.
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.registry import Param, TechniqueInfo, register

INFO = register(TechniqueInfo(
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
        Param("accelerate", bool, True, "after pruning, convert weights to torch's compressed "
              "2:4 format so sparse kernels run (fp16 / bf16 weights)"),
    ),
    requires=("cuda", "ampere"),
    extra={"workloads": ("infer", "compress")},
))


def apply(state, params: dict) -> str:
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
    chosen, skipped = target_linears(state.model, params["layers"])
    chosen = [(n, m) for n, m in chosen if m.weight.size(1) % 4 == 0]
    for _, module in chosen:
        prune.custom_from_mask(module, "weight", semi_structured_mask(module.weight))
    measured = sparsity([m.weight for _, m in chosen])
    return (f"2:4-pruned {len(chosen)} Linear layers ({measured:.1%} of their weights zero)"
            f"{skipped_text(skipped)}")


def finalize(state, params: dict) -> str:
    import torch

    from techniques.compress_common import make_permanent, target_linears

    folded = make_permanent(state.model)
    if not params["accelerate"]:
        return f"made permanent in {folded} tensors (dense kernels)"
    from torch.sparse import to_sparse_semi_structured

    converted, failed = 0, []
    for name, module in target_linears(state.model, params["layers"])[0]:
        try:
            module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight),
                                               requires_grad=False)
            converted += 1
        except (RuntimeError, ValueError, TypeError) as exc:
            failed.append(f"{name} ({str(exc).splitlines()[0][:80]})")
    text = f"made permanent; {converted} layers in compressed 2:4 form for sparse kernels"
    if failed:
        text += f"; kept dense: {', '.join(failed[:3])}" + (" ..." if len(failed) > 3 else "")
    return text
