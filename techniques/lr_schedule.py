"""Learning-rate schedule: linear warmup, then cosine decay to a floor (nanoGPT, torchtitan)."""

from __future__ import annotations

import math

from techniques.registry import Param, RunFacts, TechniqueInfo, TechniqueParams, register


def _config_check(params: TechniqueParams, facts: RunFacts) -> str | None:
    if facts.workload in ("train", "distill") and params.warmup_steps > facts.steps:
        return (f"warmup_steps = {params.warmup_steps} is longer than the run (limits.steps = "
                f"{facts.steps}), so the learning rate would never reach its peak; set "
                f"warmup_steps to {facts.steps} or less, or run more steps")
    return None


INFO = TechniqueInfo(
    name="lr_schedule",
    label="LR warmup + cosine",
    category="optimizer",
    stage="loop",
    summary="Ramps the learning rate up linearly, then decays it along a cosine; costs nothing, "
            "usually trains more stably than a constant rate.",
    source="Loshchilov & Hutter 2017 (SGDR); Goyal et al. 2017 (warmup)",
    params=(
        Param("warmup_steps", int, 20, "Steps of linear warmup", min=0, max=1_000_000),
        Param("min_lr_ratio", float, 0.1, "Floor of the decay as a fraction of the peak", min=0.0, max=1.0),
    ),
    config_check=_config_check,
)


def factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at `step` (1-based)."""
    if warmup_steps and step <= warmup_steps:
        return step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def apply(state, params: TechniqueParams) -> str:
    total = state.config.limits.steps
    warmup, floor = params.warmup_steps, params.min_lr_ratio
    state.lr_factor = lambda step: factor(step, total, warmup, floor)
    return (f"linear warmup over {warmup} steps, cosine decay to {floor:g} x peak at step {total}")


register(INFO, apply=apply)
