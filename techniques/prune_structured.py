"""Structured pruning: zero whole output rows, input channels or attention heads by Ln norm.

Whole units go, so a later step could slice them out and shrink the matrices (this technique
zeroes them in place: size and speed stay those of the dense model until then).
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.registry import Param, TechniqueInfo, TechniqueParams, register


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if params.amount >= 1.0:
        unit = {"rows": "output row", "channels": "input channel", "heads": "attention head"}
        return (f"pruning 100 % removes every {unit[params.dim]} of the chosen layers, so "
                "nothing passes through them; choose an amount below 1 (e.g. 0.25)")
    if params.dim == "heads" and params.layers == "mlp":
        return "attention heads live in the attention layers; choose layers = all or attention"
    if params.dim == "heads" and caps.get("model_kind", "builtin") != "builtin":
        return ("head pruning knows the built-in GPT's fused qkv layout only; for a Hugging Face "
                "model choose dim = rows or channels")
    return None


INFO = TechniqueInfo(
    name="prune_structured",
    label="Structured pruning (rows / channels / heads)",
    category="compression",
    stage="compress",
    summary="Zeroes whole output rows, input channels or attention heads with the smallest Ln "
            "norm: units that could be sliced away; costs more quality than unstructured.",
    source="Li et al. 2017 (Pruning filters); Michel et al. 2019 (Are sixteen heads really "
           "better than one?); Ma et al. 2023 (LLM-Pruner)",
    params=(
        Param("amount", float, 0.25, "share of the rows / channels / heads to zero in each layer",
              min=0.0, max=1.0),
        Param("dim", str, "rows", "rows (output features), channels (input features) or heads "
              "(attention heads: their q, k, v rows and proj columns)",
              choices=("rows", "channels", "heads")),
        Param("norm", int, 2, "Ln norm that ranks the units (1 or 2)", choices=(1, 2)),
        Param("layers", str, "all", "which Linear layers of the blocks: all, attention or mlp",
              choices=("all", "attention", "mlp")),
        Param("permanent", bool, True, "fold the masks into the weights after (optional) "
              "fine-tuning, so saved weights stay pruned without masks"),
    ),
    check=_check,
)


def apply(state, params: TechniqueParams) -> str:
    from torch.nn.utils import prune

    from techniques.compress_common import (
        head_scores,
        prune_heads,
        skipped_text,
        sparsity,
        target_linears,
    )

    chosen, skipped = target_linears(state.model, params.layers)
    amount, norm = params.amount, params.norm
    if params.dim == "heads":
        blocks = getattr(state.model, "blocks", [])
        removed = 0
        for block in blocks:
            attn = block.attn
            count = round(amount * attn.n_head)
            if count >= attn.n_head:
                raise Unsupported(f"techniques.prune_structured: amount = {amount} removes "
                                          f"all {attn.n_head} heads of a layer; lower it")
            drop = head_scores(attn, norm).argsort()[:count].tolist()
            if drop:
                prune_heads(attn, drop)
            removed += len(drop)
        total = sum(b.attn.n_head for b in blocks)
        return (f"zeroed {removed} of {total} attention heads (L{norm} norm of their q, k, v "
                f"rows and proj columns) in {len(blocks)} layers")
    dim = 0 if params.dim == "rows" else 1
    for _, module in chosen:
        prune.ln_structured(module, "weight", amount=amount, n=norm, dim=dim)
    measured = sparsity([m.weight for _, m in chosen])
    return (f"zeroed {amount:.0%} of the {params.dim} (L{norm} norm) of {len(chosen)} Linear "
            f"layers: {measured:.1%} of their weights{skipped_text(skipped)}")


def finalize(state, params: TechniqueParams) -> str:
    from techniques.compress_common import finalize_masks

    return finalize_masks(state, params)


register(INFO, apply=apply, finalize=finalize)
