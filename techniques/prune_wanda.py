"""Activation-aware pruning (Wanda): score each weight by |W_ij| · ||X_j||_2, the norm of its
input channel over a few calibration batches, and zero the lowest scores of every output row
(unstructured) or the 2 lowest of every 4 consecutive inputs (2:4).

A small weight on an input channel that carries large activations matters more than its
magnitude says; magnitude pruning drops it, Wanda keeps it. No retraining and no weight update:
one forward pass over the calibration text collects the norms (forward hooks on the Linear
inputs). Masks are applied like the magnitude pruner's and folded in by `finalize`.
"""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.registry import Param, TechniqueInfo, TechniqueParams, register

PATTERNS = ("unstructured", "2:4")


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if params.amount >= 1.0:
        return ("pruning 100 % zeroes every weight of the chosen layers; choose an amount below "
                "1 (e.g. 0.5)")
    return None


INFO = TechniqueInfo(
    name="prune_wanda",
    label="Activation-aware pruning (Wanda)",
    category="compression",
    stage="compress",
    summary="Zeroes the weights with the smallest |weight| x input-activation norm, measured on a "
            "few calibration batches: much less quality lost than magnitude pruning at the same "
            "sparsity; unstructured or 2:4.",
    source="Sun et al. 2023 (A Simple and Effective Pruning Approach for Large Language Models)",
    params=(
        Param("amount", float, 0.5, "share of each row's weights to zero (unstructured; 2:4 is "
              "always 50 %)", min=0.0, max=1.0),
        Param("pattern", str, "unstructured", "unstructured (per output row) or 2:4 (2 of every "
              "4 consecutive inputs)", choices=PATTERNS),
        Param("calibration_batches", int, 8, "batches of training text the activation norms "
              "are measured on", min=1, max=1024),
        Param("layers", str, "all", "which Linear layers of the blocks: all, attention or mlp",
              choices=("all", "attention", "mlp")),
        Param("permanent", bool, True, "fold the masks into the weights after (optional) "
              "fine-tuning, so saved weights stay pruned without masks"),
    ),
    check=_check,
    extra={"compress_order": "prune"},
)


# --- implementation (imports torch) ---------------------------------------------------------------
def input_norms(model, modules: list, batches: list) -> dict:
    """module -> ||X_j||_2 over every token of the batches, per input channel (fp32)."""
    import torch

    sums = {m: None for m in modules}

    def hook(module, inputs, _output):
        x = inputs[0].detach().float().reshape(-1, inputs[0].size(-1))
        squares = (x * x).sum(0)
        sums[module] = squares if sums[module] is None else sums[module] + squares

    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for ids in batches:
                model(ids)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {m: (s.sqrt() if s is not None else None) for m, s in sums.items()}


def scores(weight, norms):
    """|W| · ||X_j||: one score per weight, the norm broadcast along each input column."""
    return weight.detach().abs().float() * norms.to(weight.device)[None, :]


def unstructured_mask(score, amount: float):
    """Zero the round(amount·in) lowest scores of every output row (Wanda's comparison group)."""
    import torch

    drop = round(amount * score.size(1))
    mask = torch.ones_like(score)
    if drop:
        lowest = score.topk(drop, dim=1, largest=False).indices
        mask.scatter_(1, lowest, 0.0)
    return mask


def apply(state, params: TechniqueParams) -> str:
    from torch.nn.utils import prune

    from techniques.compress_common import (
        semi_structured_mask,
        skipped_text,
        sparsity,
        target_linears,
    )

    if state.calibration is None:
        raise Unsupported("techniques.prune_wanda: needs calibration batches of text to "
                          "measure activations, and this run provides none (data.source = "
                          "random, or a workload without text); use data.source = stdlib or "
                          "path, or prune_magnitude")
    chosen, skipped = target_linears(state.model, params.layers)
    if params.pattern == "2:4":
        odd = [n for n, m in chosen if m.weight.size(1) % 4]
        chosen = [(n, m) for n, m in chosen if m.weight.size(1) % 4 == 0]
        skipped += [f"{n} (inputs not a multiple of 4)" for n in odd]
    batches = state.calibration(params.calibration_batches)
    norms = input_norms(state.model, [m for _, m in chosen], batches)
    tokens = sum(b.numel() for b in batches)
    for name, module in chosen:
        if norms[module] is None:
            raise Unsupported(f"techniques.prune_wanda: {name} saw no input during calibration; "
                              "this model routes around it, prune it by magnitude instead")
        score = scores(module.weight, norms[module])
        if params.pattern == "2:4":
            mask = semi_structured_mask(score)
        else:
            mask = unstructured_mask(score, params.amount)
        prune.custom_from_mask(module, "weight", mask.to(module.weight.dtype))
    measured = sparsity([m.weight for _, m in chosen])
    how = "2:4" if params.pattern == "2:4" else f"per-row, asked {params.amount:.0%}"
    return (f"pruned {measured:.1%} of the weights of {len(chosen)} Linear layers by "
            f"|weight| x input norm ({how}; norms from {len(batches)} calibration batches, "
            f"{tokens:,} tokens){skipped_text(skipped)}")


def finalize(state, params: TechniqueParams) -> str:
    from techniques.compress_common import finalize_masks

    return finalize_masks(state, params)


register(INFO, apply=apply, finalize=finalize)
