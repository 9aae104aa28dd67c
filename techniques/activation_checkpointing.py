"""Activation checkpointing: keep only block inputs, recompute the rest in backward."""

from __future__ import annotations

from techniques.registry import Param, TechniqueInfo, register

INFO = register(TechniqueInfo(
    name="activation_checkpointing",
    label="Activation checkpointing",
    category="memory",
    stage="checkpoint",
    summary="Saves only each checkpointed block's input and recomputes its forward in backward: "
            "much less activation memory for about one extra forward pass (~33 % more compute).",
    source="Chen et al. 2016 (sublinear memory); Korthikanti et al. 2022",
    params=(Param("every", int, 1, "Checkpoint every k-th block (1 = every block)", min=1, max=1000),),
    mid_run=("enabled", "every"),
))


def apply(state, params: dict) -> str:
    every = params["every"]
    model = state.model
    if not hasattr(model, "checkpoint_every"):
        raise NotImplementedError("this model has no checkpointing switch")
    model.checkpoint_every = every
    blocks = len(model.blocks)
    count = len(range(0, blocks, every))
    return f"recomputing {count} of {blocks} transformer blocks in backward (every {every})"


change = apply


def remove(state) -> str:
    state.model.checkpoint_every = 0
    return "activation checkpointing off: all activations kept"
