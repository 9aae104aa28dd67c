"""Fully sharded data parallel (FSDP2, `fully_shard` per block): parameters, gradients and
optimizer states split across processes, gathered layer by layer when needed."""

from __future__ import annotations

import contextlib

from techniques.registry import Param, TechniqueInfo, TechniqueParams, register


def _check(params: TechniqueParams, caps: dict) -> str | None:
    if params.mixed_precision != "none" and not caps.get("cuda"):
        return "an FSDP mixed-precision policy needs CUDA; set mixed_precision = \"none\" on CPU"
    return None


INFO = TechniqueInfo(
    name="fsdp",
    label="Sharded data parallel (FSDP2)",
    category="parallel",
    stage="parallel",
    summary="Shards weights, gradients and optimizer states over N processes (about 1/N of "
            "the memory each) at the cost of an all-gather per block in forward and backward.",
    source="Zhao et al. 2023 (PyTorch FSDP); Rajbhandari et al. 2020 (ZeRO)",
    params=(
        Param("reshard_after_forward", bool, True, "Free gathered weights after forward "
              "(less memory, one more all-gather in backward)"),
        Param("mixed_precision", str, "none", "Parameter dtype for compute on CUDA",
              choices=("none", "bf16", "fp16")),
    ),
    requires=("distributed", "processes"),
    conflicts=("ddp",),
    check=_check,
    extra={"acts_on": ("optimizer_state_bytes", "gradient_bytes")},
)


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6 kept it under _composable
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


@contextlib.contextmanager
def _gradient_sync(model, sync: bool):
    """Accumulation: reduce-scatter once per optimizer step (the last micro-batch's backward);
    the other micro-batches accumulate unsharded gradients locally."""
    model.set_requires_gradient_sync(sync)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def apply(state, params: TechniqueParams) -> str:
    import torch

    fully_shard = _fully_shard()
    kwargs = {"reshard_after_forward": params.reshard_after_forward}
    if params.mixed_precision != "none":
        try:
            from torch.distributed.fsdp import MixedPrecisionPolicy
        except ImportError:
            from torch.distributed._composable.fsdp import MixedPrecisionPolicy
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[params.mixed_precision]
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    model = state.model
    for block in model.blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)  # the root holds embeddings, final norm and the tied head
    state.grad_sync = lambda sync: _gradient_sync(model, sync)
    state.active["fsdp"] = params  # the scaler rule reads it (recorded again by the engine)
    from techniques.runtime import refresh_scaler

    refresh_scaler(state)  # fp16 parameters need loss scaling, reduced over the job
    world = state.caps.get("world_size", 1)
    return (f"FSDP2 fully_shard on {len(model.blocks)} blocks + root over {world} processes, "
            f"reshard_after_forward={params.reshard_after_forward}, "
            f"mixed precision {params.mixed_precision}: each rank holds ~1/{world} of weights, "
            "gradients and optimizer states")


register(INFO, apply=apply)
