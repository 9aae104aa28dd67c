"""Gradient clipping by global L2 norm: caps the update size when a batch produces a spike."""

from __future__ import annotations

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register

INFO = TechniqueInfo(
    name="grad_clip",
    label="Gradient clipping",
    category="optimizer",
    stage="loop",
    summary="Rescales gradients whose global norm exceeds a bound; one extra norm per step, "
            "protects against loss spikes.",
    source="Pascanu et al. 2013",
    params=(Param("max_norm", float, 1.0, "Largest allowed global gradient norm", min=1e-6, max=1e6),),
    mid_run=("enabled", "max_norm"),
)


def apply(state, params: TechniqueParams) -> str:
    state.grad_clip_norm = params.max_norm
    return f"global gradient norm clipped at {params.max_norm:g} (the norm is reported each step)"


change = apply  # a new setting is applied the same way


def remove(state) -> str:
    state.grad_clip_norm = 0.0
    return "gradient clipping off"


register(INFO, apply=apply, change=change, remove=remove)
