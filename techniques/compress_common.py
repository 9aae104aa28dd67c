"""Helpers shared by the compression techniques (quantize_*, prune_*, weight_cast); imports torch.

Not a technique itself: it picks the Linear layers a technique may touch (the blocks' attention
and MLP projections; never the lm_head, whose weight is the token embedding's), applies and
removes pruning masks, and counts sparsity as measured on the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import prune

from techniques.params import TechniqueParams

LAYER_CHOICES = ("all", "attention", "mlp")


def target_linears(model: nn.Module,
                   layers: str = "all") -> tuple[list[tuple[str, nn.Linear]], list[str]]:
    """(Linear layers to touch, sentences about the ones left alone)."""
    own = getattr(model, "linear_targets", None)
    if own is not None:  # a Hugging Face model (profiler/models/hf.py) knows its own blocks
        return own(layers)
    chosen: list[tuple[str, nn.Linear]] = []
    skipped: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if name == "lm_head" or not name.startswith("blocks."):
            tied = getattr(model, "wte", None) is not None and module.weight is model.wte.weight
            skipped.append(f"{name} ({'tied to the embedding' if tied else 'not in a block'})")
            continue
        part = "attention" if ".attn." in name else "mlp"
        if layers != "all" and part != layers:
            continue
        chosen.append((name, module))
    return chosen, skipped


@contextlib.contextmanager
def keep_matmul_precision() -> Iterator[None]:
    """Restore torch's fp32 matmul precision after torchao's quantize_: torchao up to 0.17 calls
    torch.set_float32_matmul_precision("high") when a config keeps set_inductor_config (the
    default), which turns TF32 on for every fp32 matmul of the process, never restored — the
    baseline model measured beside the quantized one would silently run TF32. torchao 0.18
    stopped; restoring here keeps older torchao usable without that side effect."""
    precision = torch.get_float32_matmul_precision()
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)


def skipped_text(skipped: list[str]) -> str:
    return f", skipped {', '.join(skipped)}" if skipped else ""


def make_permanent(model: nn.Module) -> int:
    """Fold every pruning mask into its weight (weight_orig·mask becomes the plain weight)."""
    count = 0
    for module in model.modules():
        names = [hook._tensor_name for hook in list(module._forward_pre_hooks.values())
                 if isinstance(hook, prune.BasePruningMethod)]
        for name in names:
            prune.remove(module, name)
            count += 1
    return count


def finalize_masks(state, params: TechniqueParams) -> str:
    """A mask pruner's finalize(): fold its masks into the weights when `permanent` is set."""
    if not params.permanent:
        return "masks kept (weight_orig·weight_mask)"
    return f"made permanent in {make_permanent(state.model)} tensors"


def is_masked(model: nn.Module) -> bool:
    return any(isinstance(hook, prune.BasePruningMethod)
               for module in model.modules() for hook in module._forward_pre_hooks.values())


def sparsity(tensors: list[torch.Tensor]) -> float:
    """Share of exact zeros over these tensors, measured."""
    total = sum(t.numel() for t in tensors)
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return zeros / total if total else 0.0


def semi_structured_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest-magnitude weights of every 4 consecutive inputs (2:4 sparsity)."""
    rows, cols = weight.shape
    groups = weight.detach().abs().reshape(rows, cols // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(rows, cols).to(weight.dtype)


def head_scores(attn: nn.Module, norm: float) -> torch.Tensor:
    """Ln norm of everything that belongs to each head: its q, k, v rows and its proj columns."""
    heads = attn.n_head
    width = attn.proj.weight.size(0)
    head_dim = width // heads
    qkv = attn.qkv.weight.detach().reshape(3, heads, head_dim, width)
    proj = attn.proj.weight.detach().reshape(width, heads, head_dim)
    parts = torch.cat([qkv.permute(1, 0, 2, 3).reshape(heads, -1),
                       proj.permute(1, 0, 2).reshape(heads, -1)], dim=1)
    return parts.norm(p=norm, dim=1)


def prune_heads(attn: nn.Module, drop: list[int]) -> None:
    """Zero whole heads through pruning masks: their q, k, v rows and biases, their proj columns."""
    heads = attn.n_head
    width = attn.proj.weight.size(0)
    head_dim = width // heads
    qkv_rows = torch.ones(3, heads, head_dim)
    qkv_rows[:, drop] = 0
    qkv_rows = qkv_rows.reshape(-1)
    proj_cols = torch.ones(heads, head_dim)
    proj_cols[drop] = 0
    proj_cols = proj_cols.reshape(-1)
    device = attn.qkv.weight.device
    prune.custom_from_mask(attn.qkv, "weight", qkv_rows[:, None].expand(-1, width).to(device))
    if attn.qkv.bias is not None:
        prune.custom_from_mask(attn.qkv, "bias", qkv_rows.to(device))
    prune.custom_from_mask(attn.proj, "weight", proj_cols[None, :].expand(width, -1).to(device))
