"""Unstructured magnitude pruning: zero the smallest-magnitude weights, per layer or globally.

Zeros in a dense tensor save nothing by themselves: the model keeps its size and speed (dense
kernels multiply the zeros too). It shows how much of a model can go before quality suffers,
and feeds sparse formats or kernels that can exploit the zeros.
"""

from __future__ import annotations

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if params.amount >= 1.0:
        return ("pruning 100 % zeroes every weight of the chosen layers, so they pass nothing "
                "but their biases on; choose an amount below 1 (e.g. 0.5)")
    return None


INFO = TechniqueInfo(
    name="prune_magnitude",
    label="Magnitude pruning (unstructured)",
    category="compression",
    stage="compress",
    summary="Zeroes the smallest weights (L1 magnitude) of the blocks' Linear layers; no speed "
            "or size gain with dense kernels, measures how much the model tolerates.",
    source="Han et al. 2015 (Learning both weights and connections); Zhu & Gupta 2017",
    params=(
        Param("amount", float, 0.5, "share of the weights to zero", min=0.0, max=1.0),
        Param("scope", str, "layer", "rank weights within each layer, or across all chosen "
              "layers together (global)", choices=("layer", "global")),
        Param("layers", str, "all", "which Linear layers of the blocks: all, attention or mlp",
              choices=("all", "attention", "mlp")),
        Param("permanent", bool, True, "fold the masks into the weights after (optional) "
              "fine-tuning, so saved weights stay pruned without masks"),
    ),
    check=_check,
)


def apply(state, params: TechniqueParams) -> str:
    from torch.nn.utils import prune

    from techniques.compress_common import skipped_text, sparsity, target_linears

    chosen, skipped = target_linears(state.model, params.layers)
    if params.scope == "global":
        prune.global_unstructured([(m, "weight") for _, m in chosen],
                                  pruning_method=prune.L1Unstructured, amount=params.amount)
    else:
        for _, module in chosen:
            prune.l1_unstructured(module, "weight", amount=params.amount)
    measured = sparsity([m.weight for _, m in chosen])
    return (f"pruned {measured:.1%} of the weights of {len(chosen)} Linear layers "
            f"({params.scope} L1 magnitude, asked {params.amount:.0%})"
            f"{skipped_text(skipped)}")


def finalize(state, params: TechniqueParams) -> str:
    from techniques.compress_common import finalize_masks

    return finalize_masks(state, params)


register(INFO, apply=apply, finalize=finalize)
