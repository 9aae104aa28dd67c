"""Activation checkpointing: keep only block inputs, recompute the rest in backward."""

from __future__ import annotations

from profiler.errors import Unsupported
from techniques.registry import Param, TechniqueInfo, TechniqueParams, register


def _check(params: TechniqueParams, caps: dict) -> str | None:
    kind = caps.get("model_kind", "builtin")
    if kind == "hf-encoder":
        return "an encoder model is not trained here (infer and compress only); nothing to checkpoint"
    if kind != "builtin" and params.every > 1 and not caps.get("hf_checkpoint_every"):
        return ("this transformers version checkpoints every layer or none (its "
                "gradient_checkpointing_enable has no every_n_layers); set every = 1")
    return None

INFO = TechniqueInfo(
    name="activation_checkpointing",
    label="Activation checkpointing",
    category="memory",
    stage="checkpoint",
    summary="Saves only each checkpointed block's input and recomputes its forward in backward: "
            "much less activation memory for about one extra forward pass (~33 % more compute).",
    source="Chen et al. 2016 (sublinear memory); Korthikanti et al. 2022",
    params=(Param("every", int, 1, "Checkpoint every k-th block (1 = every block)", min=1, max=1000),),
    mid_run=("enabled", "every"),
    check=_check,
    extra={"acts_on": ("saved_for_backward_bytes",)},
)


def apply(state, params: TechniqueParams) -> str:
    every = params.every
    model = state.model
    if hasattr(model, "set_checkpointing"):  # a Hugging Face model: its own mechanism
        model.set_checkpointing(every)
        blocks = len(model.blocks)
        return (f"transformers activation checkpointing (use_reentrant=False) on "
                f"{len(range(0, blocks, every))} of {blocks} layers (every {every})")
    if not hasattr(model, "checkpoint_every"):
        raise Unsupported("this model has no checkpointing switch")
    model.checkpoint_every = every
    blocks = len(model.blocks)
    count = len(range(0, blocks, every))
    return f"recomputing {count} of {blocks} transformer blocks in backward (every {every})"


change = apply  # a new setting is applied the same way


def remove(state) -> str:
    if hasattr(state.model, "set_checkpointing"):
        state.model.set_checkpointing(0)
        return "activation checkpointing off: all activations kept"
    state.model.checkpoint_every = 0
    return "activation checkpointing off: all activations kept"


register(INFO, apply=apply, change=change, remove=remove)
