"""Gradient accumulation: k micro-batches per optimizer step, for a k-times larger effective
batch in the memory of one micro-batch."""

from __future__ import annotations

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register

INFO = TechniqueInfo(
    name="grad_accumulation",
    label="Gradient accumulation",
    category="memory",
    stage="loop",
    summary="Sums gradients of k micro-batches before each update: k x the effective batch at "
            "the activation memory of one; each step takes k forward/backward passes.",
    source="common practice (e.g. Ott et al. 2018, fairseq)",
    params=(Param("micro_batches", int, 4, "Micro-batches per optimizer step", min=1, max=1024),),
    mid_run=("enabled", "micro_batches"),
)


def apply(state, params: TechniqueParams) -> str:
    k = params.micro_batches
    state.micro_batches = k
    batch = state.config.train.batch_size
    return (f"{k} micro-batches of {batch} per step: effective batch {k * batch} sequences, "
            f"{k * batch * state.config.train.seq_len:,} tokens per step")


change = apply  # a new setting is applied the same way


def remove(state) -> str:
    state.micro_batches = 1
    return f"one batch of {state.config.train.batch_size} per step"


register(INFO, apply=apply, change=change, remove=remove)
